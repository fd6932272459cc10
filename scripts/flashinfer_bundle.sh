#!/usr/bin/env bash
# FlashInfer as a benchmark peer on a GPU machine that cannot download it or take its 101 MB wheel:
# writes OUT_DIR/flashinfer.tgz (its Python files, headers and top-level CUDA sources, ~33 MB), the
# apache-tvm-ffi wheel it imports, and OUT_DIR/setup_flashinfer.sh, which the GPU machine sources from
# the repository root before `python -m kernels.bench` (docs/kernels.md, "FlashInfer on the H200").
# Usage: bash scripts/flashinfer_bundle.sh OUT_DIR [FLASHINFER_VERSION] [TVM_FFI_VERSION]
set -euo pipefail
OUT=${1:?usage: bash scripts/flashinfer_bundle.sh OUT_DIR [FLASHINFER_VERSION] [TVM_FFI_VERSION]}
FI=${2:-0.7.4}
TVM=${3:-0.1.15.post2}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
REL=${OUT%/}  # as the setup script names it: relative to the repository root, where it is sourced
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The GPU image's Python is 3.12 on x86-64 (the device tool's KINDS.md).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
  -d "$WORK" "flashinfer-python==$FI" "apache-tvm-ffi==$TVM"
(cd "$WORK" && mkdir x && cd x && unzip -q ../flashinfer_python-"$FI"-*.whl \
  && { find flashinfer -path flashinfer/data -prune -o -type f \( -name '*.py' -o -name '*.json' -o -name '*.txt' \) -print
       find flashinfer/data/include flashinfer/data/cutlass flashinfer/data/cccl flashinfer/data/spdlog -type f
       find flashinfer/data/csrc -maxdepth 1 -type f  # the per-feature source folders are not needed for attention
       find flashinfer_python-"$FI".dist-info -type f; } > ../files.txt \
  && tar czf "$OUT/flashinfer.tgz" -T ../files.txt)
cp "$WORK"/apache_tvm_ffi-*.whl "$OUT/"
cat > "$OUT/setup_flashinfer.sh" <<SETUP
# source from the repository root on the GPU machine; each JIT module builds into /tmp/fiws at first use (10-70 s)
mkdir -p /tmp/fi /tmp/fiws && tar xzf $REL/flashinfer.tgz -C /tmp/fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $REL/apache_tvm_ffi-*.whl
export PYTHONPATH=/tmp/site:/tmp/fi:\${PYTHONPATH:-.} FLASHINFER_CUDA_ARCH_LIST=9.0a FLASHINFER_WORKSPACE_BASE=/tmp/fiws
SETUP
ls -la "$OUT"
