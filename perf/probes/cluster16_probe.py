"""Probe: the tensor-core router and fused norm-router with H split 16 ways across a (non-portable)
cluster of 16 CTAs against the heuristic's 8: twice the CTAs, each streaming half the weights.
Cold and hot, PDL on, each config checked against the float64 spec first.
    python -m perf.probes.cluster16_probe  (needs RouterGemm to accept split_k = 16
    across a cluster, as at the commit that added this probe)
"""
import dataclasses
import torch
import cute_kernels
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, reference, timing

dev = torch.device("cuda")
BF = torch.bfloat16
PLAIN = [("deepseek-v3", 7168, 256, m) for m in (4, 8, 16, 32, 64)] + [
    ("kimi-k2", 7168, 384, 16), ("qwen3-235b", 4096, 128, 16), ("gpt-oss-120b", 2880, 128, 16)]
FUSED = [("deepseek-v4-pro", 7168, 384, m) for m in (4, 8, 16)]


def variants(pick, h):
    out = [pick]
    for split in (16,):
        c = dataclasses.replace(pick, split_k=split, stages=1)
        if split <= -(-h // c.k_tile) and (stages := router_tiling.stages_for(c, h)):
            out.append(dataclasses.replace(c, stages=stages))
    return out


def report(name, m, c, pick, r, err):
    print(f"{name} M={m:3d} {'*' if c == pick else ' '} e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} "
          f"st{c.stages}: cold {r['cold_us']:5.2f} hot {r['hot_us']:5.2f}  err {err:.1e}", flush=True)


def main():
    for name, h, e, m in PLAIN:
        pick = router_family.pick("bfloat16", "bfloat16", "float32", None, m, h, e, "mma", True)
        x, w = torch.randn(m, h, device=dev, dtype=BF), torch.randn(e, h, device=dev, dtype=BF)
        want = x.double() @ w.double().T
        for c in variants(pick, h):
            got = cute_kernels.router_gemm(x, w, out=torch.full((m, e), float("nan"), device=dev), config=c).double()
            err = ((got - want).norm() / want.norm()).item()
            r = timing.time_per_call(lambda: (torch.randn(m, h, device=dev, dtype=BF),
                                              torch.randn(e, h, device=dev, dtype=BF)),
                                     lambda x, w, c=c: cute_kernels.router_gemm(x, w, config=c),
                                     bytes_per_call=e * h * 2, replays=15)
            report(name, m, c, pick, r, err)
    pick_kernel = router_family.pick_norm
    for name, h, e, m in FUSED:
        pick = pick_kernel("bfloat16", "bfloat16", "bfloat16", "float32", m, h, e, True)
        x, nw, w = (torch.randn(m, h, device=dev, dtype=BF), torch.randn(h, device=dev, dtype=BF),
                    torch.randn(e, h, device=dev, dtype=BF))
        want = reference.norm_router_gemm(x, nw, w, 1e-6)
        for c in variants(pick, h):
            router_family.pick_norm = lambda *a, c=c, **k: c
            ops.norm_router_gemm_launcher.cache_clear()
            normed, got = cute_kernels.norm_router_gemm(x, nw, w)
            err = ((got.double() - want[1].double()).norm() / want[1].double().norm()).item()
            err = max(err, ((normed.float() - want[0].float()).abs() / want[0].float().abs().clamp_min(1e-30)).max().item())
            r = timing.time_per_call(lambda: (torch.randn(m, h, device=dev, dtype=BF), nw,
                                              torch.randn(e, h, device=dev, dtype=BF)),
                                     lambda x, nw, w: cute_kernels.norm_router_gemm(x, nw, w),
                                     bytes_per_call=e * h * 2, replays=15)
            report(name + " fused", m, c, pick, r, err)
    router_family.pick_norm = pick_kernel
    ops.norm_router_gemm_launcher.cache_clear()


if __name__ == "__main__":
    main()
