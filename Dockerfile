# The control plane beside an external Triton (docker-compose.yml). No torch, no embedded
# tritonserver: the triton service carries those.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
RUN pip install --no-cache-dir .

ENV WARMCTL_DATA_DIR=/var/lib/warmctl \
    WARMCTL_MODEL_REPOSITORY=/models \
    WARMCTL_ADMIN__HOST=0.0.0.0 \
    WARMCTL_GATEWAY__HOST=0.0.0.0
VOLUME /var/lib/warmctl
EXPOSE 8001 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["warmctl"]
CMD ["serve"]
