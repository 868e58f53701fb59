# Two commands for a fresh machine (Python 3.11+ and a C compiler): `make run`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
STAMP  := $(VENV)/.installed-stamp
# Every target here is one machine's: with nothing configured, a SQLite file and an embedded
# Redis under var/ (backend/profiles.py). Outside the Makefile the default is production,
# which refuses to start without DATABASE_URL, REDIS_URL and SECRET_KEY.
USAGE_PROFILE ?= local
export USAGE_PROFILE

.PHONY: run test lint bench-ingest bench-otlp bench-phases bench-retention bench-read bench-fanout bench-backfill bench-agent-latency bench-abuse bench-soak clean

$(STAMP): requirements.txt requirements-dev.txt $(wildcard agent/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	if [ -f agent/pyproject.toml ]; then $(BIN)/pip install --quiet -e "./agent[monitor]"; fi
	touch $(STAMP)

# Migrate, make sure the local user exists, print its token and the URLs, then serve HTTP
# and WebSocket in the foreground (one daphne process per CPU behind the one address, or
# WEB_CONCURRENCY); the periodic worker runs as the launcher's child and stops with it, and
# so does the embedded Redis (backend/embedded_redis.py).
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py local_setup --base-url http://$(HOST):$(PORT)
	$(BIN)/python -m backend.serve --host $(HOST) --port $(PORT) --with-worker

# The browser tests need Debian's chromium: installed with apt if missing and possible
# (never failing here: without it those tests skip, saying why).
test: $(STAMP)
	-sh tests/web_dashboard/ensure_chromium.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd agent && ../$(BIN)/mypy src
	$(BIN)/lint-imports

# Benchmarks need the PostgreSQL and Redis servers on 127.0.0.1 (see BENCHMARKS.md).
bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

# The same records through OTLP's /v1/logs (protobuf, 512 a request), beside the NDJSON figure.
bench-otlp: $(STAMP)
	$(BIN)/python -m bench.ingest --otlp

bench-phases: $(STAMP)
	$(BIN)/python -m bench.ingest_phases
	$(BIN)/python -m bench.ingest_phases --shape backfill

bench-retention: $(STAMP)
	$(BIN)/python -m bench.retention

bench-read: $(STAMP)
	$(BIN)/python -m bench.read_api

bench-fanout: $(STAMP)
	$(BIN)/python -m bench.fanout

bench-backfill: $(STAMP)
	$(BIN)/python -m bench.agent_backfill

bench-agent-latency: $(STAMP)
	$(BIN)/python -m bench.agent_latency

# Every attack of issue 12 against a make run server (SQLite + embedded Redis by default;
# no PostgreSQL or Redis server needed): peak RSS, Redis's longest command, a bystander's p99.
bench-abuse: $(STAMP)
	$(BIN)/python -m bench.abuse

# Issue 15: 10 minutes of mixed load (20 agents, 200 WebSocket dashboards, 50 polling clients,
# retention on) against backend.serve --workers 2 --with-worker on PostgreSQL + Redis; exact
# final totals, memory of every server process over time. MINUTES=1 for a short run.
bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)

clean:
	rm -rf $(VENV) var/test-*
