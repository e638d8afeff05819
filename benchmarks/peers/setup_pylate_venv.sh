#!/usr/bin/env bash
# Create (or refresh) .venv-pylate-<version>: PyLate in its own venv on the CPU build of torch, used
# only by benchmarks/peers/encode_checkpoint.py (export parity). Idempotent.
#
# Usage:  [PYLATE_VERSION=1.2.0] bash benchmarks/peers/setup_pylate_venv.sh  [VENV_DIR]
# (default: PyLate 1.6.0, the latest on 2026-11-27, whose requirements list is for 1.6.0;
# 1.2.0 is the last without do_query_expansion)
#
# `pip install pylate` alone replaces torch with a multi-GB CUDA build: torch==2.13.0 (the CPU
# wheel on this machine) goes in first and every later pip call is constrained to it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYLATE_VERSION="${PYLATE_VERSION:-1.6.0}"
VENV="${1:-$REPO_ROOT/.venv-pylate-$PYLATE_VERSION}"
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
if [ "$PYLATE_VERSION" = "1.2.0" ]; then
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "pylate==1.2.0"
else
    # 1.3+ requires fast-plaid, whose wheels pin other torch builds; only PyLate's PLAID index
    # imports it, not the encoder this harness runs: its other requirements, then PyLate itself
    "${PIP[@]}" install -q -c "$CONSTRAINTS" "sentence-transformers==5.3.0" "transformers<=5.3.0,>=4.41.0" \
        "datasets>=2.20.0" "accelerate>=0.31.0" "pandas>=2.2.1" "ujson==5.12.0" "ninja==1.11.1.4" "fastkmeans==0.5.0"
    "${PIP[@]}" install -q --no-deps "pylate==$PYLATE_VERSION"
fi
"$VENV/bin/python" -c "import pylate, torch; print('[setup] pylate', pylate.__version__, 'torch', torch.__version__)"
