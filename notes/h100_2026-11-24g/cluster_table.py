"""Prints the forced-config sweep of bench_w4a8.py --sweep-configs for the many-token shapes:
the cooperative tiles alone and in clusters of two row tiles, with and without r32."""
import json
import sys

rows = json.load(open(sys.argv[1]))["rows"]
cf = ["128x128x128_coop", "128x256x128_coop", "128x256x128_coop_c4x1", "128x256x128_coop_c2x1",
      "128x224x128_coop_c2x1", "128x224x128_coop_c4x1"]
short = ["c128", "c256", "c256_c4", "c256_c2", "c224_c2", "c224_c4"]
print("shape | bf16 | int8 | heur | w4a8 | +r32 | " + " | ".join(short) + " | +r32: " + " | ".join(short)
      + " | best+r32 / bf16")
for r in rows:
    if r["M"] < 256:
        continue
    g = lambda k: r.get(k, float("nan"))
    plus = [g("cfg+r32:sm90_" + c + "_us") for c in cf]
    best = min(x for x in plus if x == x) if any(x == x for x in plus) else float("nan")
    print(f"{r['M']}x{r['K']}->{r['N']} | {r['bf16_us']:.1f} | {r['w8a8_int8_us']:.1f} | {r['w4a8_config'][5:]} | "
          f"{r['w4a8_us']:.1f} | {r['w4a8_r32_us']:.1f} | "
          + " | ".join(f"{g('cfg:sm90_' + c + '_us'):.1f}" for c in cf) + " | "
          + " | ".join(f"{x:.1f}" for x in plus) + f" | {r['bf16_us'] / best:.2f}")
