"""Probe: cold time (PDL on) of router and fused-norm dot configs around the heuristic's pick
(round 1 ran against the kernel of that day, whose stages could be reused; configs whose share of H
does not fit are now left out).
Compiles every config first with one process per core (cute_kernels.aot), then times them.
    python -m perf.probes.dot_v2_probe OUT_DIR [--round2 | --round3]
"""
import dataclasses, itertools, sys
import torch
import cute_kernels
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import bridge, ops, timing
from cute_kernels.kernels.router_gemm import RouterGemm

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
ROUND1 = [  # name, H, E, w dtype, out dtype, bias dtype, M, (e_tiles, splits, warps)
    ("deepseek-v3", 7168, 256, BF, F32, None, 1, ((1, 2, 4), (1, 2), (8, 4))),
    ("deepseek-v3", 7168, 256, BF, F32, None, 4, ((1, 2, 4), (1, 2), (8,))),
    ("kimi-k2", 7168, 384, BF, F32, None, 1, ((2, 3, 6), (1, 2), (8,))),
    ("qwen3-235b", 4096, 128, BF, F32, None, 1, ((1, 2), (1, 2), (8, 4))),
    ("gpt-oss-120b", 2880, 128, BF, BF, BF, 1, ((1, 2), (1, 2), (8, 4))),
    ("minimax-m2", 3072, 256, F32, F32, None, 1, ((1, 2, 4), (1, 2), (8,))),
    ("mixtral", 4096, 8, BF, F32, None, 1, ((1, 2), (1, 2, 4), (8, 4))),
]
FUSED1 = [("deepseek-v4-pro", 7168, 384, m, ((3, 6, 12), (1, 2, 4), (8,))) for m in (1, 2)]
# Round 2: the dot variant (no cluster) against the tensor-core one at larger M.
ROUND2 = [("deepseek-v3", 7168, 256, BF, F32, None, m, ((2, 4, 8), (1,), (8,))) for m in (8, 16, 32)] + [
    ("qwen3-235b", 4096, 128, BF, F32, None, 16, ((2, 4, 8), (1,), (8,)))]
MMA2 = [("deepseek-v3", 7168, 256, m, ((16, 32), (1, 2, 4, 8))) for m in (8, 16, 32)] + [
    ("qwen3-235b", 4096, 128, 16, ((16, 32), (1, 2, 4, 8)))]
FUSED2 = [("deepseek-v4-pro", 7168, 384, m, ((3, 6), (1,), (8,))) for m in (4, 8, 16)]
# Round 3: more consumer warps (shorter walk per warp) and the expert tile at M = 4.
ROUND3 = [("deepseek-v3", 7168, 256, BF, F32, None, 1, ((2, 3), (1,), (8, 16))),
          ("deepseek-v3", 7168, 256, BF, F32, None, 4, ((2, 3, 4), (1,), (8, 16))),
          ("qwen3-235b", 4096, 128, BF, F32, None, 1, ((1, 2, 4), (1,), (8, 16))),
          ("gpt-oss-120b", 2880, 128, BF, BF, BF, 1, ((1, 2, 4), (1,), (8, 12))),
          ("kimi-k2", 7168, 384, BF, F32, None, 1, ((3, 4), (1,), (8, 16)))]
FUSED3 = [("deepseek-v4-pro", 7168, 384, m, ((3, 6), (1,), (8, 16))) for m in (1, 4)]
ROUTER, FUSED, MMA = {"--round2": (ROUND2, FUSED2, MMA2), "--round3": (ROUND3, FUSED3, [])}.get(
    sys.argv[-1], (ROUND1, FUSED1, []))


def router_cfgs(h, e, w, out, bias, m, grid):
    pick = router_family.pick(BF, w, out, bias, m, h, e, "dot", True)
    cfgs = [pick]
    for et, s, wp in itertools.product(*grid):
        c = RouterGemm(BF, w, out, bias, "dot", et, pick.m_tile, s, 1, True, wp)
        cfgs.append(dataclasses.replace(c, stages=router_tiling.stages_for(c, h)))
    return pick, list(dict.fromkeys(c for c in cfgs if c.stages >= 1))


def mma_cfgs(h, e, m, grid):
    pick = router_family.pick(BF, BF, F32, None, m, h, e, "mma", True)
    cfgs = [pick]
    for et, s in itertools.product(*grid):
        c = dataclasses.replace(pick, e_tile=et, split_k=s, stages=1)
        cfgs.append(dataclasses.replace(c, stages=max(2, router_tiling.stages_for(c, h))))
    return pick, list(dict.fromkeys(cfgs))


def fused_cfgs(h, e, m, grid):
    pick = router_family.pick_norm(BF, BF, BF, F32, m, h, e, True)
    cfgs = [pick]
    if pick.variant == "mma":  # the dot variant's own pick at this M, beside the grid
        pick_dot = router_family.pick_norm(BF, BF, F32, F32, m, h, e, True)
        pick = dataclasses.replace(pick, variant="dot", e_tile=pick_dot.e_tile, m_tile=pick_dot.m_tile, split_k=1,
                                   consumer_warps=8, stages=1)
        cfgs.append(dataclasses.replace(pick, stages=router_tiling.stages_for(pick, h)))
        pick = cfgs[0]
    for et, s, wp in itertools.product(*grid):
        c = dataclasses.replace(pick, variant="dot", e_tile=et, split_k=s, consumer_warps=wp, stages=1,
                                m_tile=router_tiling.m_tile_for("dot", m))
        c = dataclasses.replace(c, consumer_warps=min(wp, c.k_tiles_per_cta(h)))
        cfgs.append(dataclasses.replace(c, stages=router_tiling.stages_for(c, h)))
    return pick, list(dict.fromkeys(c for c in cfgs if c.stages >= 1))


def main(out_dir):
    plan = ([("router", r, *router_cfgs(*r[1:])) for r in ROUTER] + [("fused", f, *fused_cfgs(*f[1:])) for f in FUSED]
            + [("router", (n, h, e, BF, F32, None, m, None), *mma_cfgs(h, e, m, g)) for n, h, e, m, g in MMA])
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    for kind, spec, pick, cfgs in plan:
        res = []
        for c in cfgs:
            if kind == "router":
                _, h, e, w, out, bias, m, _ = spec
                wd, od = getattr(torch, w), getattr(torch, out)
                make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), torch.randn(e, h, device=dev, dtype=wd),
                                torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None,
                                torch.empty(m, e, device=dev, dtype=od))
                call = lambda x, wt, b, o, c=c, od=od: cute_kernels.router_gemm(x, wt, b, out_dtype=od, out=o, config=c)
                nbytes = e * h * wd.itemsize
            else:
                _, h, e, m, _ = spec
                make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), torch.randn(e, h, device=dev, dtype=torch.bfloat16),
                                torch.rand(1, h, device=dev, dtype=torch.bfloat16), torch.empty(m, e, device=dev),
                                torch.empty(m, h, device=dev, dtype=torch.bfloat16))
                fn = bridge.compiled(c, dev)
                call = lambda x, wt, nw, o, n, fn=fn: bridge.launch(fn, dev, x, wt, nw, o, n, 1e-6)
                nbytes = e * h * 2
            r = timing.time_per_call(make, call, bytes_per_call=nbytes, replays=15)
            res.append((r["cold_us"], r["hot_us"], c == pick, c))
        res.sort(key=lambda t: t[0])
        print(f"{kind} {spec[0]} M={spec[-2]}: pick e{pick.e_tile} s{pick.split_k} w{pick.consumer_warps} st{pick.stages}")
        for cold, hot, is_pick, c in res:
            print(f"  {'*' if is_pick else ' '} cold {cold:5.2f} hot {hot:5.2f}  e{c.e_tile} m{c.m_tile} s{c.split_k} "
                  f"w{c.consumer_warps} st{c.stages}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
