#!/usr/bin/env bash
# Installs everything shoal needs on a fresh Debian machine; idempotent, so a second run is fast.
# Heavy artefacts go to $SHOAL_CACHE (default ~/.cache/shoal), never into the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOAL_CACHE="${SHOAL_CACHE:-$HOME/.cache/shoal}"
mkdir -p "$SHOAL_CACHE"

phase_start=0
phase() { phase_start=$(date +%s); echo; echo "==> $*"; }
phase_end() { echo "<== done in $(( $(date +%s) - phase_start ))s"; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

phase "system packages (apt-get)"
need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v go >/dev/null || need_apt+=(golang-go)
# Container images without Docker (scripts/build-images.sh): build, base image, archives, runtime.
for tool in buildah podman skopeo debootstrap; do command -v "$tool" >/dev/null || need_apt+=("$tool"); done
command -v shellcheck >/dev/null || need_apt+=(shellcheck)   # actionlint checks workflow scripts with it
# The sandbox's real node (docs/sandbox.md): container runtime, CNI plugins, iptables; gcc builds its pause image.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# Debian's package may start a system Prometheus on :9090; shoal's tests start their own.
$SUDO pkill -x prometheus 2>/dev/null || true
phase_end

phase "python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -U pip wheel
.venv/bin/python -m pip install -q -e '.[dev]'
phase_end

phase "vLLM (CPU build) and PyPI's torch"
bash model-server/install-vllm.sh .venv
phase_end

phase "control plane and node binaries (Go builds, cached by version)"
.venv/bin/shoal sandbox build --node
phase_end

phase "helm and kubectl"
bash scripts/install-tools.sh
phase_end

phase "checkov (security scan of the chart and the operator's children; its own virtualenv)"
# Its own environment: checkov pins many libraries that would fight vLLM's pins in .venv.
checkov_venv="$SHOAL_CACHE/tools/checkov-venv"
if ! "$checkov_venv/bin/checkov" --version 2>/dev/null | grep -qx "3.3.30"; then
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install -q "checkov==3.3.30"
fi
phase_end

phase "model: SmolLM2-135M-Instruct as a Hugging Face folder"
.venv/bin/shoal model prepare smollm2
phase_end

phase "container images (buildah, cached by content hash)"
bash scripts/build-images.sh
phase_end
