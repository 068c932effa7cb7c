"""Prints the forced-config sweep of `bench_w4a8.py --sweep-configs` for the many-token shapes:
the given configs (names without the "sm90_" prefix), with and without r32.

    python config_table.py bench_w4a8.json 128x128x128_coop 128x256x128_coop_c2x1 ...
"""
import json
import sys

rows = json.load(open(sys.argv[1]))["rows"]
cf = sys.argv[2:]
print("shape | bf16 | int8 | heur | w4a8 | +r32 | " + " | ".join(cf) + " | +r32: " + " | ".join(cf))
for r in rows:
    if r["M"] < 256:
        continue
    g = lambda k: r.get(k, float("nan"))
    print(f"{r['M']}x{r['K']}->{r['N']} | {r['bf16_us']:.1f} | {r['w8a8_int8_us']:.1f} | {r['w4a8_config'][5:]} | "
          f"{r['w4a8_us']:.1f} | {r['w4a8_r32_us']:.1f} | "
          + " | ".join(f"{g('cfg:sm90_' + c + '_us'):.1f}" for c in cf) + " | "
          + " | ".join(f"{g('cfg+r32:sm90_' + c + '_us'):.1f}" for c in cf))
