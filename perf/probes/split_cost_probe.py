"""Probe: what a split of H costs the router kernels at small M. For two shapes and M = 1, 16:
the dot and tensor-core variants with no split (where a CTA's share fits), and split 2-16 ways
through a cluster or the global workspace, cold and hot, PDL on; each config's error against
the float64 product checked first. ``--ncu`` instead launches a few configs once each inside an
NVTX range "probe" for Nsight Compute.
    python -m perf.probes.split_cost_probe
"""
import dataclasses, itertools, sys
import torch
import cute_kernels
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
SHAPES = [("qwen3-30b", 2048, 128, m) for m in (1, 16)] + [("deepseek-v3", 7168, 256, m) for m in (1, 16)]


def configs(h, e, m):
    picks = [router_family.pick(BF, BF, F32, None, m, h, e, v, True) for v in ("dot", "mma")]
    cfgs = list(picks)
    for pick in picks:
        e_tiles = (16, 32) if pick.variant == "mma" else (pick.e_tile, 16) if m == 1 else (pick.e_tile,)
        for et, s, red in itertools.product(e_tiles, (1, 2, 4, 8, 16), ("global", "cluster")):
            if (red == "cluster" and s > 8) or (s == 1 and red == "global"):
                continue
            c = dataclasses.replace(pick, e_tile=et, split_k=s, reduce=red, stages=1)
            if s > -(-h // c.k_tile):
                continue
            if c.variant == "dot":
                c = dataclasses.replace(c, consumer_warps=min(pick.consumer_warps, c.k_tiles_per_cta(h)))
            stages = router_tiling.stages_for(c, h)
            if stages:
                cfgs.append(dataclasses.replace(c, stages=stages))
    return picks, list(dict.fromkeys(cfgs))


def label(c):
    return f"{c.variant} e{c.e_tile} m{c.m_tile} s{c.split_k} {c.reduce if c.split_k > 1 else '':7s} st{c.stages} w{c.consumer_warps}"


def main(ncu: bool):
    plan = [(s, *configs(*s[1:])) for s in SHAPES]
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    for (name, h, e, m), picks, cfgs in plan:
        x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
        w = torch.randn(e, h, device=dev, dtype=torch.bfloat16)
        if ncu:
            if m != 1:
                continue
            chosen = [c for c in cfgs if c in picks or (name == "qwen3-30b" and c.split_k <= 2 and c.e_tile in (2, 16))]
            probe_kit.ncu_launches([(f"{name} M={m}: {label(c)}", lambda c=c: cute_kernels.router_gemm(x, w, config=c))
                                    for c in chosen])
            continue
        probe_kit.print_ranked(f"{name} M={m}: picks {', '.join(label(p) for p in picks)}",
                               probe_kit.router_rows(cfgs, x, w), label, 1e-5, picks)


if __name__ == "__main__":
    main("--ncu" in sys.argv)
