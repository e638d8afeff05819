#!/usr/bin/env bash
# Create (or refresh) .venv-pylate: PyLate in its own venv on the CPU build of torch, used
# only by benchmarks/peers/encode_checkpoint.py (export parity). Idempotent.
#
# Usage:  bash benchmarks/peers/setup_pylate_venv.sh  [VENV_DIR]
#
# `pip install pylate` alone replaces torch with a multi-GB CUDA build: torch==2.13.0 (the CPU
# wheel on this machine) goes in first and every later pip call is constrained to it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$REPO_ROOT/.venv-pylate}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating venv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.13.0" > "$CONSTRAINTS"

"${PIP[@]}" install -q "torch==2.13.0"
# the versions export parity was measured with (pylate 1.2.0 pins sentence-transformers 4.0.2)
"${PIP[@]}" install -q -c "$CONSTRAINTS" "pylate==1.2.0" "sentence-transformers==4.0.2" "transformers==4.48.2"
"$VENV/bin/python" -c "import pylate, torch; print('[setup] pylate', pylate.__version__, 'torch', torch.__version__)"
