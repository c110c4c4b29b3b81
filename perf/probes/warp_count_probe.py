"""Probe: the tensor-core consumers with 3, 4, 5 or 7 consumer warps. A stage row holds
32 columns per consumer warp, so with 4 (or 8) warps it is 256 (512) bytes long and the rows r
and r + 1 that one quarter-warp's 16-byte fragment loads touch fall on the same shared-memory
banks (a 2-way conflict on every load); with an odd warp count the row is an odd multiple of
64 bytes and the two rows fall on disjoint banks. Every config is checked against the float64
product (spec for the fused kernel) first; cold and hot, PDL on; "*" marks the heuristic's pick.
    python -m perf.probes.warp_count_probe          # timings
    python -m perf.probes.warp_count_probe --ncu    # one launch each, for ncu
"""
import dataclasses, sys
import torch
import cute_kernels
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, reference, timing

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
WARPS = (3, 4, 5, 7)
ROUTER = [("deepseek-v3", 7168, 256, BF, F32, None, m) for m in (4, 8, 16, 32, 64, 128)] + [
    ("kimi-k2", 7168, 384, BF, F32, None, 16), ("kimi-k2", 7168, 384, BF, F32, None, 128),
    ("gpt-oss-120b", 2880, 128, BF, BF, BF, 16), ("gpt-oss-120b", 2880, 128, BF, BF, BF, 128),
    ("qwen3-235b", 4096, 128, BF, F32, None, 16), ("qwen3-235b", 4096, 128, BF, F32, None, 64)] + [
    ("minimax-m2", 3072, 256, F32, F32, None, m) for m in (8, 32, 128)] + [
    ("minimax-m3", 6144, 128, F32, F32, None, m) for m in (32, 128)]
FUSED = [4, 8, 16, 64]  # DeepSeek-V4-Pro 7168 x 384
NCU = {("deepseek-v3", 16), ("fused", 16)}


def with_warps(pick, h, warps):
    c = dataclasses.replace(pick, consumer_warps=warps, split_k=1, stages=1)
    c = dataclasses.replace(c, split_k=min(8, -(-h // c.k_tile)))
    stages = router_tiling.stages_for(c, h)
    return dataclasses.replace(c, stages=stages) if stages else None


def variants(pick, h):
    return [c for c in (with_warps(pick, h, w) for w in WARPS) if c is not None]


def label(c):
    return f"e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} st{c.stages} smem {c.smem_bytes() // 1024}K"


def router_plan():
    for name, h, e, wd, out, bias, m in ROUTER:
        pick = router_family.pick(BF, wd, out, bias, m, h, e, "mma", True)
        yield (name, h, e, wd, out, bias, m), pick, variants(pick, h)


def fused_plan():
    for m in FUSED:
        pick = router_family.pick_norm(BF, BF, BF, F32, m, 7168, 384, True)
        if pick.variant == "mma":
            yield m, pick, variants(pick, 7168)


def run_router(shape, pick, cfgs, ncu):
    name, h, e, wd, out, bias, m = shape
    od = getattr(torch, out)
    x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
    w = torch.randn(e, h, device=dev, dtype=getattr(torch, wd))
    b = torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None
    if ncu:
        probe_kit.ncu_launches([(f"{name} M={m}: {label(c)}",
                                 lambda c=c: cute_kernels.router_gemm(x, w, b, out_dtype=od, config=c)) for c in cfgs])
        return
    probe_kit.print_ranked(f"{name} M={m}: pick {label(pick)}" + ("" if wd == BF else " (fp32 weights)"),
                           probe_kit.router_rows(cfgs, x, w, b, od), label, 4e-3 if out == BF else 1e-5, [pick])


def run_fused(m, pick, cfgs, ncu, h=7168, e=384):
    x, nw, w = (torch.randn(m, h, device=dev, dtype=torch.bfloat16), torch.randn(h, device=dev, dtype=torch.bfloat16),
                torch.randn(e, h, device=dev, dtype=torch.bfloat16))
    want_n, want = (t.double() for t in reference.norm_router_gemm(x, nw, w, 1e-6))
    saved = router_family.pick_norm
    rows = []
    try:
        for c in cfgs:
            router_family.pick_norm = lambda *a, c=c, **k: c
            ops.norm_router_gemm_launcher.cache_clear()
            normed, got = cute_kernels.norm_router_gemm(x, nw, w)
            torch.cuda.synchronize()
            if ncu:
                torch.cuda.nvtx.range_push("probe")
                cute_kernels.norm_router_gemm(x, nw, w)
                torch.cuda.nvtx.range_pop()
                torch.cuda.synchronize()
                print(f"ncu launch fused M={m}: {label(c)}", flush=True)
                continue
            err = ((got.double() - want).norm() / want.norm()).item()
            nerr = (normed.double() - want_n).abs().max().item()
            r = timing.time_per_call(lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), nw,
                                              torch.randn(e, h, device=dev, dtype=torch.bfloat16)),
                                     lambda x, nw, w: cute_kernels.norm_router_gemm(x, nw, w),
                                     bytes_per_call=e * h * 2, replays=15)
            rows.append((r["cold_us"], r["hot_us"], c, err, f" normed max|d| {nerr:.1e}"))
    finally:
        router_family.pick_norm = saved
        ops.norm_router_gemm_launcher.cache_clear()
    if not ncu:
        probe_kit.print_ranked(f"fused deepseek-v4-pro M={m}: pick {label(pick)}", rows, label, 1e-5, [pick])


def main(ncu):
    routers, fuseds = list(router_plan()), list(fused_plan())
    if ncu:
        keep = lambda cs: [c for c in cs if c.consumer_warps in (4, 5)]  # noqa: E731
        routers = [(s, p, keep(cs)) for s, p, cs in routers if (s[0], s[-1]) in NCU]
        fuseds = [(m, p, keep(cs)) for m, p, cs in fuseds if ("fused", m) in NCU]
    probe_kit.compile_all([c for *_, cs in routers for c in cs] + [c for *_, cs in fuseds for c in cs])
    for shape, pick, cfgs in routers:
        run_router(shape, pick, cfgs, ncu)
    for m, pick, cfgs in fuseds:
        run_fused(m, pick, cfgs, ncu)


if __name__ == "__main__":
    main("--ncu" in sys.argv)
