# syntax=docker/dockerfile:1.7
# The LLM-aware router: `shoal router ...` (the operator sets the arguments). Only the `router` extra.
#   docker build -f docker/router.Dockerfile -t shoal-router:dev .
# Base images are pinned by version; pin them by digest too in the release pipeline.
FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY common/ common/
COPY router/ router/
RUN python -m venv /opt/shoal \
 && /opt/shoal/bin/pip install --no-compile "/src[router]"

FROM python:3.12.8-slim-bookworm
LABEL org.opencontainers.image.title="shoal-router" \
      org.opencontainers.image.source="https://github.com/shoal-dev/shoal" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin shoal
COPY --from=build /opt/shoal /opt/shoal
ENV PATH=/opt/shoal/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["shoal"]
CMD ["router", "--help"]
