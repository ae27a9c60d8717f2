# One image for every role (web, worker, beat, migrate); docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never PATH="/opt/venv/bin:$PATH"
RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 campaigns
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY campaigns ./campaigns
COPY workers ./workers
COPY templates ./templates
RUN uv sync --frozen --no-dev
USER campaigns
EXPOSE 8000
CMD ["campaigns", "serve", "--host", "0.0.0.0", "--port", "8000"]
