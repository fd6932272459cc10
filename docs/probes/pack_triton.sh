#!/usr/bin/env bash
# Pack a Triton release for the lent H200, whose calls carry at most 64 MiB: the Python package and the NVIDIA
# backend for sm_90+ only (no AMD codegen library, no CUPTI, no nvdisasm, and no legacy `ptxas`, which 3.9 uses
# below sm_90 only: it builds sm_90a with `ptxas-blackwell`), the compiler library stripped of its static
# symbols, xz-compressed.
#   bash docs/probes/pack_triton.sh 3.9.0 .t39/triton.tar.xz
# On the device: mkdir -p /tmp/triton && tar xJf .t39/triton.tar.xz -C /tmp/triton; PYTHONPATH=/tmp/triton:$PWD ...
# (the device's own Triton stays installed: its entry points name the backends, which then load from this copy).
set -euo pipefail
version=${1:?Triton version, e.g. 3.9.0}
out=${2:?output .tar.xz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip install -q --no-deps --target "$work/site" "triton==$version"
pkg=$work/site/triton
rm -rf "$pkg/backends/amd/lib/libtriton_amd_codegen.so" "$pkg/backends/nvidia/lib/cupti" \
       "$pkg/backends/nvidia/lib/cupti-blackwell" "$pkg/backends/nvidia/bin/ptxas" "$pkg/backends/nvidia/bin/nvdisasm"
find "$pkg" -name __pycache__ -prune -exec rm -rf {} +
strip --strip-unneeded "$pkg/_C/libtriton.so"
mkdir -p "$(dirname "$out")"
tar -C "$work/site" -cf - triton | xz -T0 -6 > "$out"
size=$(stat -c %s "$out")
echo "$out: $((size / 1024 / 1024)) MiB (a device call carries 64 MiB in all)"
[ "$size" -le $((60 * 1024 * 1024)) ] || echo "warning: leaves little room for other carried files" >&2
