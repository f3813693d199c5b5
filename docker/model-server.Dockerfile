# syntax=docker/dockerfile:1.7
# The model-server on NVIDIA GPUs: `shoal model-server --engine vllm ...` (the operator sets the
# arguments). The `server` extra plus vLLM's CUDA build from PyPI, whose torch wheels carry the CUDA
# runtime; the GPU driver comes from the node (NVIDIA container toolkit / device plugin).
#   docker build -f docker/model-server.Dockerfile -t shoal-model-server:dev .
# Base images are pinned by version; pin them by digest too in the release pipeline.
ARG VLLM_VERSION=0.32.0

FROM python:3.12.8-slim-bookworm AS build
ARG VLLM_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY common/ common/
COPY model-server/ model-server/
RUN python -m venv /opt/shoal \
 && /opt/shoal/bin/pip install --no-compile "/src[server]" "vllm==${VLLM_VERSION}"

FROM python:3.12.8-slim-bookworm
LABEL org.opencontainers.image.title="shoal-model-server" \
      org.opencontainers.image.source="https://github.com/shoal-dev/shoal" \
      org.opencontainers.image.licenses="Apache-2.0"
# Triton (used by vLLM) compiles a small C launcher at run time, so a C compiler must be present.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --create-home --home-dir /home/shoal --shell /usr/sbin/nologin shoal
COPY --from=build /opt/shoal /opt/shoal
# Caches (Hugging Face, Triton, torch compile) go to the home folder; mount a volume there to keep them.
ENV PATH=/opt/shoal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/home/shoal HF_HOME=/home/shoal/.cache/huggingface
USER 10001:10001
WORKDIR /home/shoal
EXPOSE 8000
ENTRYPOINT ["shoal"]
CMD ["model-server", "--help"]
