"""Operations: liveness and readiness probes and Prometheus metrics. Not the domain: ``usage``
and ``realtime`` never import this package; it listens to their signals."""
