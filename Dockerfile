# Image of the `app` and `ingest` services of docker-compose.yml (they talk to the neo4j service).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NEURFLOW_ARTIFACT_DIR=/artifacts \
    NEURFLOW_CACHE=/cache

WORKDIR /srv/neurflow
COPY pyproject.toml README.md ./
COPY neurflow ./neurflow
COPY ingest ./ingest
COPY app ./app
RUN pip install ".[app]"

RUN useradd --create-home --uid 10001 neurflow \
    && mkdir -p /artifacts /cache \
    && chown neurflow:neurflow /artifacts /cache
USER neurflow

EXPOSE 8501
CMD ["neurflow", "app", "--host", "0.0.0.0", "--port", "8501"]
