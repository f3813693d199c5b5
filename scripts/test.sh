#!/usr/bin/env bash
# The README's test command: static checks, then every test (unit, integration, e2e, vllm).
# Extra arguments go to pytest (for example: scripts/test.sh -m unit).
set -uo pipefail
cd "$(dirname "$0")/.."
export SHOAL_CACHE="${SHOAL_CACHE:-$HOME/.cache/shoal}"
export PATH="$PWD/.venv/bin:$SHOAL_CACHE/bin:$PATH"
status=0
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "==> $name"
  if "$@"; then echo "<== $name ok ($(( $(date +%s) - t0 ))s)"; else echo "<== $name FAILED"; status=1; fi
}
step "ruff check" ruff check .
step "ruff format" ruff format --check .
step "mypy" mypy
step "import boundaries" lint-imports
step "actionlint" actionlint
step "pytest" python -m pytest "$@"
exit $status
