FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingestor ./ingestor
COPY seeds ./seeds
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin ingestor \
    && mkdir -p /data/output /data/state /config \
    && chown -R ingestor /data
COPY config/ingestor.example.yaml /config/ingestor.example.yaml

USER ingestor
VOLUME ["/data/output", "/data/state"]
EXPOSE 9108
# Mount a config at /config/ingestor.yaml with output.dir /data/output and
# state.path /data/state/ingestor.db (and metrics.host 0.0.0.0 to scrape from outside).
CMD ["ingestor", "run", "--config", "/config/ingestor.yaml"]
