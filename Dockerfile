# One image for every role (web, staff, worker, beat, flower, migrate); docker-compose.yml
# picks the command.
FROM python:3.11-slim
# PROMETHEUS_MULTIPROC_DIR: the processes of one container (the web's --workers, the Celery
# pool) count into one directory, summed by whoever serves the container's metrics
# (campaigns/metrics.py); created below, writable by the app's user.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never PATH="/opt/venv/bin:$PATH" \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/campaigns/metrics
RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 campaigns \
    && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && chown campaigns:campaigns "$PROMETHEUS_MULTIPROC_DIR"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY campaigns ./campaigns
COPY workers ./workers
COPY templates ./templates
RUN uv sync --frozen --no-dev
USER campaigns
EXPOSE 8000
CMD ["campaigns", "serve", "--host", "0.0.0.0", "--port", "8000"]
