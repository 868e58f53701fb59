from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations: probes and metrics"

    def ready(self) -> None:
        # The domain sends signals and knows no listener; the metrics listen from here.
        from operations import metrics
        from realtime import signals as realtime_signals
        from usage import signals as usage_signals

        usage_signals.records_ingested.connect(
            metrics.count_ingest, dispatch_uid="operations.ingest"
        )
        usage_signals.dependency_unavailable.connect(
            metrics.count_dependency_error, dispatch_uid="operations.dependency"
        )
        realtime_signals.connection_opened.connect(
            metrics.websocket_opened, dispatch_uid="operations.ws_opened"
        )
        realtime_signals.connection_closed.connect(
            metrics.websocket_closed, dispatch_uid="operations.ws_closed"
        )
