# Triton of the same release as the embedded binary (2.51 = NGC 24.10), plus torch for our
# Python-based `torchscript` backend (triton_backends/, mounted by docker-compose.yml).
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "numpy<2"

COPY docker/triton-entrypoint.sh /usr/local/bin/triton-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/triton-entrypoint.sh"]
