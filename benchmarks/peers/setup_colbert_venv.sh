#!/usr/bin/env bash
# Create (or refresh) /work/main/.venv-colbert: an isolated venv holding Stanford's
# colbert-ai PLAID engine on the CPU build of torch, used only by
# benchmarks/peers/colbert_plaid.py.  Idempotent: re-running it is a no-op apart
# from pip's "already satisfied" checks.
#
# Usage:  bash benchmarks/peers/setup_colbert_venv.sh  [VENV_DIR]
#
# Torch safety: torch==2.13.0 (the CPU wheel found through pip's find-links
# /opt/wheels) is installed first, and every later pip call runs with a
# constraints file pinning torch==2.13.0, so no dependency can swap in a CUDA
# build.  colbert-ai itself is installed with --no-deps (its metadata lists
# heavy, unused extras such as `datasets`, and an old `torch==1.13.1` extra).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$REPO_ROOT/.venv-colbert}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

TORCH_VERSION="2.13.0"
COLBERT_VERSION="0.2.22"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating venv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

# 1. torch first (CPU wheel).
"${PIP[@]}" install -q "torch==$TORCH_VERSION"

# 2. colbert-ai's runtime deps that the indexing/search code paths import, with
#    versions that work with torch 2.13 (transformers 5 breaks colbert-ai's
#    modeling imports; colbert only needs faiss for k-means).
"${PIP[@]}" install -q -c "$CONSTRAINTS" \
    "transformers>=4.40,<5" \
    "faiss-cpu>=1.8" \
    "numpy" "scipy" "tqdm" "ujson" "bitarray" "GitPython" "ninja" "setuptools"

# 3. colbert-ai itself, without letting pip touch the dependency set.
"${PIP[@]}" install -q --no-deps "colbert-ai==$COLBERT_VERSION"

# 4. sanity check: right torch, CPU only, colbert importable.
"$PY" - <<'PY'
import importlib.metadata as md
import torch, faiss, transformers
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.cuda.is_available()
import colbert  # noqa: F401  (imports transformers-based modeling too)
from colbert.indexing.collection_indexer import CollectionIndexer  # noqa: F401
from colbert.search.index_storage import IndexScorer  # noqa: F401
print("[setup] ok: colbert-ai", md.version("colbert-ai"), "| torch", torch.__version__,
      "| transformers", transformers.__version__, "| faiss-cpu", faiss.__version__,
      "| numpy", md.version("numpy"), "| ninja", md.version("ninja"))
PY
