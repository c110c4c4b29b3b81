"""Router GEMM config sweep: time every (variant, e_tile, m_tile, split_k) specialisation that
fits, for chosen presets and M, cold and PDL on, beside the heuristic's pick.

    python perf/tune_router_gemm.py --preset deepseek-v3 --m 1 16 128 [--out FILE.json]

Prints, per (preset, M), the configs sorted by time; the JSON keeps every measured row.
"""

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: perf, cute_kernels and dispatch live here
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import ops, presets, timing  # noqa: E402
from cute_kernels.kernels.router_gemm import tiling as router_tiling  # noqa: E402
from cute_kernels.kernels.router_gemm import RouterGemm  # noqa: E402
from perf.benches.router_gemm import bytes_per_call, make_inputs, points  # noqa: E402


def candidates(preset, m: int):
    names = ("bfloat16", preset.gate_dtype)
    out = preset.logits_dtype
    bias = preset.gate_dtype if preset.gate_bias else None
    variants = ["dot"] + (["mma"] if router_tiling.mma_dtypes(*names) else [])
    for variant in variants:
        m_tile = router_tiling.m_tile_for(variant, m)
        if variant == "mma":
            grid = itertools.product((16, 32, 64), (m_tile, max(8, m_tile // 2)), (1, 2, 4, 8), (4,))
        else:
            grid = itertools.product((1, 2, 3, 4, 8, 16), (m_tile,), (1, 2, 4), (router_tiling.DOT_WARPS, 4))
        for e_tile, tile, split_k, warps in dict.fromkeys(grid):
            if variant == "dot" and e_tile * tile > router_tiling.DOT_MAX_ACC:
                continue
            probe = RouterGemm(*names, out, bias, variant, e_tile, tile, split_k, 1, True, warps)
            if split_k > -(-preset.hidden_size // probe.k_tile):
                continue
            stages = router_tiling.stages_for(probe, preset.hidden_size)
            if stages:
                yield dataclasses.replace(probe, stages=stages)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["deepseek-v3"])
    p.add_argument("--m", nargs="+", type=int, default=[1, 16, 128])
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--out", help="JSON file for every measured row")
    args = p.parse_args()
    import cute_kernels

    meta = timing.device_meta()
    rows = []
    for name in args.preset:
        preset = presets.get(name)
        out_dtype = getattr(torch, preset.logits_dtype)
        for point in points([name], sizes=args.m):
            m = point["M"]
            pick = router_tiling.pick("bfloat16", preset.gate_dtype, preset.logits_dtype,
                                          preset.gate_dtype if preset.gate_bias else None, m, preset.hidden_size,
                                          preset.num_experts,
                                          router_tiling.variant_for("bfloat16", preset.gate_dtype, m, preset.hidden_size),
                                          True)
            timed = []
            for cfg in candidates(preset, m):
                def call(x, w, b, out, cfg=cfg):
                    cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=out, config=cfg)
                try:
                    r = timing.time_per_call(make_inputs(point), call, bytes_per_call=bytes_per_call(point),
                                             replays=20)
                except Exception:
                    traceback.print_exc()
                    continue
                timed.append((r["cold_us"], r["hot_us"], cfg))
                rows.append({"preset": name, "M": m, "config": cfg.__dict__, "heuristic": cfg == pick,
                             "cold_us": round(r["cold_us"], 3), "hot_us": round(r["hot_us"], 3)})
            timed.sort(key=lambda t: t[0])
            print(f"{name} M={m}: heuristic pick {pick}")
            for cold, hot, cfg in timed[:args.top]:
                mark = "*" if cfg == pick else " "
                print(f"  {mark} cold {cold:6.2f} hot {hot:6.2f}  {cfg.variant} e{cfg.e_tile} m{cfg.m_tile} "
                      f"s{cfg.split_k} w{cfg.consumer_warps} st{cfg.stages}", flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
