#!/usr/bin/env bash
# Session 10 call 8: waits for call 7's detached SDXL run (torchao FP8 + compile), then collects it.
t0=$SECONDS
while [ $SECONDS -lt 575 ] && [ ! -f /tmp/r/done ]; do sleep 5; done
echo "at $((SECONDS-t0))s of this call, $(( $(date +%s) - $(cat /tmp/r/start 2>/dev/null || echo 0) ))s since the run began: done=$([ -f /tmp/r/done ] && echo yes || echo no); inductor cache $(du -sh /tmp/torchinductor_$(whoami) 2>/dev/null | cut -f1)"
cut -c1-300 /tmp/r/sdxl/bench_pipeline.md 2>/dev/null
grep -h '"mode"' /tmp/r/sdxl.log | cut -c1-300
rm -f /tmp/r/sdxl/ref_*.pt; rm -rf /tmp/r/gc/so
tar -C /tmp -cJf $OUT/s10call8.tar.xz r
