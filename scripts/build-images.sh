#!/usr/bin/env bash
# Builds shoal's CPU images (operator, router, model-server-cpu) from docker/*.Dockerfile with buildah,
# without a Docker engine or a registry, into OCI archives in $SHOAL_CACHE/images (index.json lists them).
# Content-addressed: an image whose inputs did not change is not built again, so a second run is fast.
#   scripts/build-images.sh [IMAGE...]        (see docs/images.md)
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOAL_CACHE="${SHOAL_CACHE:-$HOME/.cache/shoal}"
for tool in buildah podman skopeo debootstrap runc; do
  command -v "$tool" >/dev/null || {
    echo "build-images.sh needs $tool (apt-get install --no-install-recommends buildah podman skopeo debootstrap runc)" >&2
    exit 1
  }
done
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
nice -n 10 "$PY" -m shoal_cli images build "$@"
