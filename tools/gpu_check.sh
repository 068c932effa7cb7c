#!/usr/bin/env bash
# One call on a GPU machine: build qengine._C, run the GPU tests, run the GEMM benchmark.
# Logs and results go to $OUT (default ./out/gpu_check). Expects the nvidia-cutlass wheel in
# ${WHL_DIR:-.whl}/ where it is not installed (GPU machines without network).
#
#   tools/gpu_check.sh [build|test|bench|all|sanitize] ...   (default: all; sanitize only when named)
#   ARCHS="89;90a" BENCH_ARGS="--models flux1-dev --sweep-configs" tools/gpu_check.sh all
#   SAN_K="quantize or m_sweep" tools/gpu_check.sh sanitize   (pytest -k expression)
#   TEST_PATHS="tests/gpu/test_conv_kernels.py" BUILD_TEMP=/tmp/qe-build tools/gpu_check.sh build test
#
# Building takes ~5-6 minutes of a 10-minute call (ARCHS=90a). To build once per session: `pack`
# writes the built extension (xz, ~10 MB) and a hash of the sources it was built from to $OUT/so/;
# copy both files into .sobuild/ here (git-ignored) and carry ".sobuild" to later calls. `build`
# then installs that .so instead of compiling, when its source hash matches the tree (the csrc/
# sources, setup.py, tools/kernel_build.py); otherwise it compiles as usual. With BUILD_TEMP set,
# `pack` also writes the kernel objects (kernels.tar.xz); carried in .sobuild/, `build` unpacks
# them and recompiles only the kernel sources that changed (the bindings always compile: ~1 min).
#   ARCHS=90a tools/gpu_check.sh build test pack      # first call; then: cp $FILES/so/* .sobuild/
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STEPS=${*:-all}

if ! python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("cutlass_library") is None)'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ${WHL_DIR:-.whl}/nvidia_cutlass-*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

has() { [[ " $STEPS " == *" all "* || " $STEPS " == *" $1 "* ]]; }

# LC_ALL=C: the file order (so the hash) must not depend on the machine's locale.
# Only what the build reads: a README edit under csrc/ must not make a carried .so stale.
src_hash() { find csrc setup.py tools/kernel_build.py -type f \( -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' -o -name '*.py' \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16; }
so_name=$(python3 -c 'import sysconfig; print("qengine/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')

if has build && [[ -f .sobuild/C.so.xz && -f .sobuild/C.so.src ]] && [[ "$(cat .sobuild/C.so.src)" == "$(src_hash)" ]]; then
  xz -d -c .sobuild/C.so.xz >"$so_name" && echo "build: installed the carried .sobuild/C.so.xz (sources $(src_hash))"
  STEPS=${STEPS//build/}
  STEPS=${STEPS//all/test bench}
fi

if has build; then
  t0=$SECONDS
  if [[ -n "${BUILD_TEMP:-}" && -f .sobuild/kernels.tar.xz && ! -d "$BUILD_TEMP/qengine_kernels" ]]; then
    mkdir -p "$BUILD_TEMP" && xz -d -c .sobuild/kernels.tar.xz | tar -C "$BUILD_TEMP" -xf - \
      && echo "build: reusing carried kernel objects (.sobuild/kernels.tar.xz; stale ones recompile)"
  fi
  QENGINE_BUILD_CUDA=1 QENGINE_CUDA_ARCHS=${ARCHS:-"89;90a"} MAX_JOBS=${MAX_JOBS:-16} \
    python3 setup.py build_ext --inplace ${BUILD_TEMP:+--build-temp "$BUILD_TEMP"} >"$OUT/build.log" 2>&1
  rc=$?
  grep -E "qengine: compiled|error" "$OUT/build.log" | tail -40
  echo "build rc=$rc in $((SECONDS - t0))s"
  [[ $rc -eq 0 ]] || { tail -60 "$OUT/build.log"; exit 1; }
fi

if has test; then
  t0=$SECONDS
  timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -x -p no:cacheprovider ${TEST_PATHS:-tests/gpu} ${TEST_ARGS:-} \
    >"$OUT/test.log" 2>&1
  echo "tests rc=$? in $((SECONDS - t0))s"
  grep -E "passed|failed|error|Error|assert" "$OUT/test.log" | tail -25
fi

if has bench; then
  t0=$SECONDS
  timeout ${BENCH_TIMEOUT:-300} python3 benchmarks/bench_gemm.py --out-dir "$OUT" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  echo "bench rc=$? in $((SECONDS - t0))s"
  tail -5 "$OUT/bench.log"
  [[ -f "$OUT/bench_gemm.md" ]] && cat "$OUT/bench_gemm.md"
fi

if [[ " $STEPS " == *" sanitize "* ]]; then
  # memcheck over the kernel tests (the caching allocator off so out-of-bounds accesses are seen).
  t0=$SECONDS
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${SAN_TIMEOUT:-240} compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w8a8_kernels.py -k "${SAN_K:-not real_shapes}" \
    >"$OUT/sanitize.log" 2>&1
  echo "compute-sanitizer memcheck rc=$? in $((SECONDS - t0))s"
  grep -E "ERROR SUMMARY|passed|failed|Invalid" "$OUT/sanitize.log" | tail -8
fi

if [[ " $STEPS " == *" pack "* ]]; then
  mkdir -p "$OUT/so"
  xz -T0 -2 -c "$so_name" >"$OUT/so/C.so.xz" && src_hash >"$OUT/so/C.so.src"
  echo "pack: $(du -h "$OUT/so/C.so.xz" | cut -f1) -> $OUT/so/ (sources $(cat "$OUT/so/C.so.src"))"
  # The kernel objects too (content-keyed, tools/kernel_build.py): untar them into a build temp
  # dir (BUILD_TEMP) on a later call and only changed kernel sources recompile.
  if [[ -n "${BUILD_TEMP:-}" && -d "$BUILD_TEMP/qengine_kernels" ]]; then
    tar -C "$BUILD_TEMP" -cf - qengine_kernels | xz -T0 -2 >"$OUT/so/kernels.tar.xz"
    echo "pack: kernel objects $(du -h "$OUT/so/kernels.tar.xz" | cut -f1) -> $OUT/so/kernels.tar.xz"
  fi
fi
