#!/usr/bin/env bash
# Compile every torch-free CUDA translation unit under csrc/ (not the bindings) with nvcc, for
# each target arch the file is meant for, objects into a temporary directory. Fails on any error.
#
#   tools/compile_kernels.sh              # archs 80 86 89 90a
#   ARCHS="90a" JOBS=4 tools/compile_kernels.sh
#
# Which archs a file gets (the same rule as setup.py):
#   csrc/<family>/sm90/*.cu  -> 90a only (wgmma/TMA)
#   csrc/<family>/sm89/*.cu  -> archs >= 89 (mma.sync e4m3)
#   everything else               -> every arch
# CUTLASS headers: $QENGINE_CUTLASS_DIR, else the nvidia-cutlass wheel (4.2.0.0) of the first of
# $PYTHON, $VIRTUAL_ENV/bin/python, .venv/bin/python, python3 that has it installed.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHS=${ARCHS:-"80 86 89 90a"}
JOBS=${JOBS:-$(nproc)}
NVCC=${NVCC:-nvcc}

if [[ -n "${QENGINE_CUTLASS_DIR:-}" ]]; then
  CUTLASS_INC="$QENGINE_CUTLASS_DIR/include"; CUTLASS_UTIL="$QENGINE_CUTLASS_DIR/tools/util/include"
else
  root=""
  for py in ${PYTHON:-} ${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python} .venv/bin/python python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    root=$("$py" -c 'import importlib.util as u; s=u.find_spec("cutlass_library"); print(list(s.submodule_search_locations)[0] if s else "")' 2>/dev/null) || root=""
    [[ -n "$root" ]] && break
  done
  [[ -n "$root" ]] || { echo "CUTLASS not found: pip install nvidia-cutlass==4.2.0.0 or set QENGINE_CUTLASS_DIR" >&2; exit 1; }
  CUTLASS_INC="$root/source/include"; CUTLASS_UTIL="$root/source/tools/util/include"
fi
[[ -f "$CUTLASS_INC/cutlass/cutlass.h" ]] || { echo "no cutlass/cutlass.h under $CUTLASS_INC" >&2; exit 1; }

OUT=$(mktemp -d -t qengine-kernels.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

archs_for() {  # file -> the archs it is compiled for
  local f=$1 a
  for a in $ARCHS; do
    case "$f" in
      */sm90/*) [[ $a == 90a ]] && echo "$a" ;;
      */sm89/*) [[ ${a%a} -ge 89 ]] && echo "$a" ;;
      *) echo "$a" ;;
    esac
  done
  return 0
}

defs="-DQENGINE_HAS_SM80"
for a in $ARCHS; do
  [[ ${a%a} -ge 89 ]] && defs="$defs -DQENGINE_HAS_SM89_FP8"
  [[ $a == 90a ]] && defs="$defs -DQENGINE_HAS_SM90"
done

jobs_file="$OUT/jobs"
: >"$jobs_file"
while IFS= read -r f; do
  for a in $(archs_for "$f"); do
    echo "$f $a" >>"$jobs_file"
  done
done < <(find csrc -name '*.cu' -not -path 'csrc/bindings/*' | sort)

compile_one() {
  local f=$1 a=$2 obj
  obj="$OUT/$(echo "$f" | tr '/' '_').sm_$a.o"
  local t0=$SECONDS
  if "$NVCC" -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr $defs \
      -Icsrc/include -I"$CUTLASS_INC" -I"$CUTLASS_UTIL" \
      "-gencode=arch=compute_$a,code=sm_$a" -c "$f" -o "$obj" 2>"$obj.log"; then
    echo "ok    sm_$a  $((SECONDS - t0))s  $f"
  else
    echo "FAIL  sm_$a  $f" >&2; cat "$obj.log" >&2; return 1
  fi
}
export -f compile_one
export OUT NVCC CUTLASS_INC CUTLASS_UTIL defs

start=$SECONDS
echo "compiling $(wc -l <"$jobs_file") (file, arch) pairs with $JOBS jobs; archs: $ARCHS"
# Heaviest first (the sm90 CUTLASS TUs) so the parallel tail is short.
sort -r -k1,1 "$jobs_file" | xargs -P "$JOBS" -L 1 bash -c 'compile_one "$0" "$1"'
echo "all kernels compiled in $((SECONDS - start))s"
