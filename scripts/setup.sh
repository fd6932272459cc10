#!/usr/bin/env bash
# Creates .venv with pagedlab and its test extras. Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# A CPU build of torch is enough here (Triton runs under TRITON_INTERPRET=1 without a GPU);
# install the pinned CPU wheel first so the bare `torch` requirement does not pull a CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 \
    || .venv/bin/pip install -q --disable-pip-version-check torch
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
