"""Graph breaks of the SDXL UNet under dynamo with torchao FP8 weights (set_inductor_config=False)
vs bf16: torch._dynamo.explain traces the whole UNet as bench_pipeline's --compile-scope model
does, without running inductor. Why is torchao FP8 + compile 3x slower than bf16 + compile?"""
import collections
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_pipeline as bp  # noqa: E402

dev, dt = torch.device("cuda"), torch.bfloat16
for quant in (False, True):
    model = bp.build_model("sdxl", False, dev, dt)
    inputs = bp.make_inputs("sdxl", model, False, dev, dt)
    if quant:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False),
                  filter_fn=lambda m, f: isinstance(m, nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0)
    torch._dynamo.reset()
    with torch.inference_mode():
        ex = torch._dynamo.explain(model)(**inputs, return_dict=False)
    reasons = collections.Counter(str(b.reason).split("\n")[0][:160] for b in ex.break_reasons)
    ops = sum(len(list(g.graph.nodes)) for g in ex.graphs)
    print(f"{'torchao fp8' if quant else 'bf16'}: graphs {ex.graph_count}, breaks {ex.graph_break_count}, fx nodes {ops}")
    for r, n in reasons.most_common(8):
        print(f"   {n:4d} x {r}")
    del model
    torch.cuda.empty_cache()
