# syntax=docker/dockerfile:1.7
# The model-server on NVIDIA GPUs: `shoal model-server --engine vllm ...` (the operator sets the
# arguments). The `server` extra plus vLLM's CUDA build from PyPI, whose torch wheels carry the CUDA
# runtime; the GPU driver comes from the node (NVIDIA container toolkit / device plugin).
#   docker build -f docker/model-server.Dockerfile -t shoal-model-server:dev .
# Built by the release workflow; `shoal images build` only lints it (no GPU here). See docs/images.md.
# Base images are pinned by version; pin them by digest too in the release pipeline.
ARG VLLM_VERSION=0.32.0
ARG BASE_IMAGE=python:3.12.8-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VLLM_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY common/ common/
COPY model-server/ model-server/
# Bytecode is compiled here: the root filesystem is read-only at run time (readOnlyRootFilesystem).
RUN python3 -m venv /opt/shoal \
 && /opt/shoal/bin/pip install "/src[server]" "vllm==${VLLM_VERSION}"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="shoal-model-server" \
      org.opencontainers.image.source="https://github.com/shoal-dev/shoal" \
      org.opencontainers.image.licenses="Apache-2.0"
# Triton (used by vLLM on GPUs) compiles a small C launcher at run time, so a C compiler must be present.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin shoal
COPY --from=build /opt/shoal /opt/shoal
# Everything written at run time goes under /tmp (an emptyDir in the pod): HOME, the Hugging Face,
# vLLM, Triton and torch caches. Models come from a mounted volume (/mnt/models) or the cache volume (/cache).
ENV PATH=/opt/shoal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp HF_HOME=/tmp/huggingface VLLM_CACHE_ROOT=/tmp/vllm
# uid/gid 10001: the one uid of every shoal image and pod spec (docs/images.md).
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["shoal"]
CMD ["model-server", "--help"]
