"""Probe: the fused RMSNorm + router on its dot against its tensor-core variant at small M
(DeepSeek-V4-Pro, bf16), cold and hot, PDL on, each checked against the float64 spec first.
    python -m perf.probes.norm_variant_probe
"""
import torch
import cute_kernels
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, presets, reference, timing

dev = torch.device("cuda")


def main():
    p = presets.get("deepseek-v4-pro")
    h, e = p.hidden_size, p.num_experts
    for m in (1, 2, 3, 4, 8, 16):
        for dot_max_m in (64, 0):  # every M on the dot variant; every M on tensor cores
            router_tiling.NORM_DOT_MAX_M = dot_max_m
            router_tiling.pick_norm.cache_clear()
            router_family.pick_norm.cache_clear()
            ops.norm_router_gemm_launcher.cache_clear()
            k = router_family.pick_norm("bfloat16", "bfloat16", "bfloat16", "float32", m, h, e, True)
            x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
            nw = torch.randn(h, device=dev, dtype=torch.bfloat16)
            w = torch.randn(e, h, device=dev, dtype=torch.bfloat16)
            _, logits = cute_kernels.norm_router_gemm(x, nw, w)
            _, want = reference.norm_router_gemm(x, nw, w, 1e-6)
            err = ((logits.double() - want.double()).norm() / want.double().norm()).item()
            make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), nw,
                            torch.randn(e, h, device=dev, dtype=torch.bfloat16))
            r = timing.time_per_call(make, lambda x, nw, w: cute_kernels.norm_router_gemm(x, nw, w),
                                     bytes_per_call=e * h * 2, replays=15)
            print(f"M={m:3d} {k.variant} e{k.e_tile} m{k.m_tile} s{k.split_k} st{k.stages} w{k.consumer_warps}: "
                  f"cold {r['cold_us']:5.2f} hot {r['hot_us']:5.2f}  err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
