FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingestor ./ingestor
COPY seeds ./seeds
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin ingestor \
    && mkdir -p /data/output /data/state /config /usr/share/ingestor \
    && chown -R 10001 /data
# The default configuration (container paths, metrics on for the health check), and every
# key documented where a mount over /config does not hide it.
COPY config/docker.yaml /config/ingestor.yaml
COPY config/ingestor.example.yaml /usr/share/ingestor/ingestor.example.yaml

USER 10001
VOLUME ["/data/output", "/data/state"]
EXPOSE 9108
# 503 while records cannot be written (README: /healthz); needs metrics.enabled.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
CMD ["ingestor", "run", "--config", "/config/ingestor.yaml"]
