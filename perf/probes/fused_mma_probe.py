"""Probe: the fused norm-router's tensor-core variant with 4 or 8 consumer warps and 16- or
32-expert tiles (DeepSeek-V4-Pro, M = 4, 8, 16), beside the plain router's tensor-core pick on
DeepSeek-V3 M = 16; cold and hot, PDL on, each config checked against the float64 spec first.
    python -m perf.probes.fused_mma_probe
"""
import dataclasses, itertools
import torch
import cute_kernels
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, reference, timing

dev = torch.device("cuda")
BF = torch.bfloat16


def fused(m, h=7168, e=384):
    pick = router_family.pick_norm("bfloat16", "bfloat16", "bfloat16", "float32", m, h, e, True)
    x, nw, w = (torch.randn(m, h, device=dev, dtype=BF), torch.randn(h, device=dev, dtype=BF),
                torch.randn(e, h, device=dev, dtype=BF))
    want = reference.norm_router_gemm(x, nw, w, 1e-6)[1].double()
    pick_kernel = router_family.pick_norm
    for warps, et in itertools.product((4, 8), (32, 16)):
        c = dataclasses.replace(pick, consumer_warps=warps, e_tile=et, stages=1)
        c = dataclasses.replace(c, stages=router_tiling.stages_for(c, h))
        if not c.stages:
            continue
        router_family.pick_norm = lambda *a, c=c, **k: c
        ops.norm_router_gemm_launcher.cache_clear()
        got = cute_kernels.norm_router_gemm(x, nw, w)[1].double()
        err = ((got - want).norm() / want.norm()).item()
        r = timing.time_per_call(lambda: (torch.randn(m, h, device=dev, dtype=BF), nw,
                                          torch.randn(e, h, device=dev, dtype=BF)),
                                 lambda x, nw, w: cute_kernels.norm_router_gemm(x, nw, w),
                                 bytes_per_call=e * h * 2, replays=15)
        print(f"fused M={m:2d} {'*' if c == pick else ' '} e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} "
              f"st{c.stages}: cold {r['cold_us']:5.2f} hot {r['hot_us']:5.2f}  err {err:.1e}", flush=True)
    router_family.pick_norm = pick_kernel
    ops.norm_router_gemm_launcher.cache_clear()


def plain(m, h=7168, e=256):
    c = router_family.pick("bfloat16", "bfloat16", "float32", None, m, h, e, "mma", True)
    x, w = torch.randn(m, h, device=dev, dtype=BF), torch.randn(e, h, device=dev, dtype=BF)
    got = cute_kernels.router_gemm(x, w, config=c).double()
    want = x.double() @ w.double().T
    err = ((got - want).norm() / want.norm()).item()
    r = timing.time_per_call(lambda: (torch.randn(m, h, device=dev, dtype=BF), torch.randn(e, h, device=dev, dtype=BF)),
                             lambda x, w: cute_kernels.router_gemm(x, w, config=c), bytes_per_call=e * h * 2, replays=15)
    print(f"plain M={m:2d} * e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps}: cold {r['cold_us']:5.2f} "
          f"hot {r['hot_us']:5.2f}  err {err:.1e}", flush=True)


if __name__ == "__main__":
    for m in (4, 8, 16):
        fused(m)
    for m in (16, 64):
        plain(m)
