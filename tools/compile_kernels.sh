#!/usr/bin/env bash
# Compile-check every torch-free CUDA translation unit under csrc/ (not the bindings) for each
# target arch it is meant for; fails on any error. CI runs this (it has nvcc but no GPU and no
# CUDA torch). The compile itself, the arch rule per directory (sm90/ -> 90a, sm89/ -> >= 89,
# else every arch) and the flags are tools/kernel_build.py's, the same code setup.py uses.
#
#   tools/compile_kernels.sh                       # archs 80 86 89 90a
#   ARCHS="90a" JOBS=4 tools/compile_kernels.sh
#
# CUTLASS headers: $QENGINE_CUTLASS_DIR, else the nvidia-cutlass wheel (4.2.0.0) installed in
# $PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
ARCHS=${ARCHS:-"80 86 89 90a"}
OUT=$(mktemp -d -t qengine-kernels.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

start=$SECONDS
"$PY" tools/kernel_build.py --archs "${ARCHS// /;}" --out "$OUT" --jobs "${JOBS:-$(nproc)}" --nvcc "${NVCC:-nvcc}"
echo "all kernel sources compiled for archs $ARCHS in $((SECONDS - start))s"
