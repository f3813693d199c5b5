# syntax=docker/dockerfile:1.7
# The shoal operator (kopf handlers + autoscaler): `shoal operator`. Only the `operator` extra.
#   docker build -f docker/operator.Dockerfile -t shoal-operator:dev .
# `shoal images build` builds it with buildah from a local Debian base (BASE_IMAGE); see docs/images.md.
# Base images are pinned by version; pin them by digest too in the release pipeline.
# Any Debian bookworm image with python3 (3.11+) and its venv module works as the base.
ARG BASE_IMAGE=python:3.12.8-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY common/ common/
COPY operator/ operator/
# Bytecode is compiled here: the root filesystem is read-only at run time (readOnlyRootFilesystem).
RUN python3 -m venv /opt/shoal \
 && /opt/shoal/bin/pip install "/src[operator]"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="shoal-operator" \
      org.opencontainers.image.source="https://github.com/shoal-dev/shoal" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 10001: the one uid of every shoal image and pod spec (docs/images.md).
RUN groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin shoal
COPY --from=build /opt/shoal /opt/shoal
ENV PATH=/opt/shoal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["shoal"]
CMD ["operator"]
