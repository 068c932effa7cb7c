#!/usr/bin/env bash
# Session 7 call 5: split-K one-wave plan: tests, SASS histogram, small-M benchmark.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build pack 2>&1 | tail -3
mkdir -p /tmp/r
cuobjdump -sass /tmp/qe-build/qengine_kernels/*splitk*.o > /tmp/r/splitk.sass 2>&1
awk '/Function :/{p=($0 ~ /ShapeILi8ELi256ELi2EEE13__nv/)} p' /tmp/r/splitk.sass | grep -oE "^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_.]+" | awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -12 | tr '\n' ' '; echo
timeout 120 python3 -m pytest -q -p no:cacheprovider --maxfail=15 tests/gpu/test_w4a8_kernels.py > /tmp/r/w4a8_tests.log 2>&1; echo "w4a8 tests rc=$?"
grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/w4a8_tests.log | tail -16
timeout 150 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 8 16 32 48 64 --sweep-configs --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cut -d'|' -f2-7,10,11,15- /tmp/r/w4a8/bench_w4a8.md
tar -C /tmp -cJf $OUT/s7call5.tar.xz r
