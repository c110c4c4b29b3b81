"""Probe: the dot (CUDA-core) router at small M with H split 1-8 ways across a cluster, now that
the split's reduction is a DSMEM push (no cluster barrier after the start). Each CTA reads its
share of x only after the grid-dependency wait, so a split cuts the bytes on that critical path
(DeepSeek-V3 M = 4: 57 KB of x per CTA unsplit). Plain router presets at M = 1-32 and the fused
DeepSeek-V4-Pro norm-router at M = 1-4, cold and hot, PDL on, each config checked against the
float64 spec first.
    python -m perf.probes.dot_split_probe
"""
import dataclasses, itertools
import torch
import cute_kernels
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, reference, timing

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
SHAPES = ([("deepseek-v3", 7168, 256, BF, BF, F32, None, m, False) for m in (1, 2, 4, 8)]
          + [("kimi-k2", 7168, 384, BF, BF, F32, None, m, False) for m in (1, 4)]
          + [("qwen3-235b", 4096, 128, BF, BF, F32, None, m, False) for m in (1, 4)]
          + [("gpt-oss-120b", 2880, 128, BF, BF, BF, BF, m, False) for m in (1, 4)]
          + [("minimax-m2", 3072, 256, BF, F32, F32, None, m, False) for m in (1, 4, 16, 32)]
          + [("deepseek-v4-pro", 7168, 384, BF, BF, F32, None, m, True) for m in (1, 2, 4)])


def pick_of(h, e, xd, wd, out, bias, m, fused):
    if fused:
        return router_family.pick_norm(xd, BF, wd, out, m, h, e, True)
    return router_family.pick(xd, wd, out, bias, m, h, e, "dot", True)


def configs(h, e, xd, wd, out, bias, m, fused):
    pick = pick_of(h, e, xd, wd, out, bias, m, fused)
    cfgs = [pick]
    if pick.variant != "dot":
        return pick, cfgs
    for s, et in itertools.product((1, 2, 4, 8), sorted({pick.e_tile * f for f in (1, 2, 4)} | {16})):
        if et > min(16, e, router_tiling.DOT_MAX_ACC // pick.m_tile):
            continue
        c = dataclasses.replace(pick, e_tile=et, split_k=s, consumer_warps=router_tiling.DOT_WARPS, stages=1)
        if s > -(-h // c.k_tile):
            continue
        c = dataclasses.replace(c, consumer_warps=min(router_tiling.DOT_WARPS, c.k_tiles_per_cta(h)))
        if stages := router_tiling.stages_for(c, h):
            cfgs.append(dataclasses.replace(c, stages=stages))
    return pick, list(dict.fromkeys(cfgs))


def label(c):
    return f"{c.variant} e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} st{c.stages}"


def main():
    plan = [(s, *configs(*s[1:])) for s in SHAPES]
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    pick_kernel = router_family.pick_norm
    for (name, h, e, xd, wd, out, bias, m, fused), pick, cfgs in plan:
        od, xt, wt = getattr(torch, out), getattr(torch, xd), getattr(torch, wd)
        res = []
        for c in cfgs:
            x = torch.randn(m, h, device=dev, dtype=xt)
            w = torch.randn(e, h, device=dev, dtype=wt)
            b = torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None
            nw = torch.randn(h, device=dev, dtype=torch.bfloat16)
            if fused:
                router_family.pick_norm = lambda *a, c=c, **k: c
                ops.norm_router_gemm_launcher.cache_clear()
                _, got = cute_kernels.norm_router_gemm(x, nw, w)
                want = reference.norm_router_gemm(x, nw, w, 1e-6)[1].double()
                make = lambda: (torch.randn(m, h, device=dev, dtype=xt), nw, torch.randn(e, h, device=dev, dtype=wt))
                call = lambda x, nw, w: cute_kernels.norm_router_gemm(x, nw, w)
            else:
                got = cute_kernels.router_gemm(x, w, b, out_dtype=od,
                                               out=torch.full((m, e), float("nan"), device=dev, dtype=od), config=c)
                want = x.double() @ w.double().T + (0 if b is None else b.double())
                make = lambda: (torch.randn(m, h, device=dev, dtype=xt), torch.randn(e, h, device=dev, dtype=wt),
                                torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None,
                                torch.empty(m, e, device=dev, dtype=od))
                call = lambda x, w, b, o, c=c: cute_kernels.router_gemm(x, w, b, out_dtype=od, out=o, config=c)
            err = ((got.double() - want).norm() / want.norm()).item()
            r = timing.time_per_call(make, call, bytes_per_call=e * h * w.element_size(), replays=15)
            res.append((r["cold_us"], r["hot_us"], c, err, ""))
        router_family.pick_norm = pick_kernel
        ops.norm_router_gemm_launcher.cache_clear()
        probe_kit.print_ranked(f"{name} M={m}{' fused' if fused else ''}: pick {label(pick)}", res, label,
                               4e-3 if out == BF else 1e-5, [pick])


if __name__ == "__main__":
    main()
