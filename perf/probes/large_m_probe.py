"""Probe: where the tensor-core router's time goes at large M. For DeepSeek-V3 (M = 64, 128),
Kimi-K2 and gpt-oss-120b (M = 128) and gpt-oss-120b M = 1 (dot, bias): the heuristic's pick and
8-way cluster splits over expert tiles 16-64, token tiles 16-64 and 4 or 8 consumer warps, cold
and hot, PDL on, each checked against the float64 product first. ``--ncu`` instead launches a
few configs once each inside an NVTX range "probe" for Nsight Compute:
    python -m perf.probes.large_m_probe
    ncu --clock-control none --set full --nvtx --nvtx-include "probe/" -k regex:kernel_cutlass \
        -o large_m python -m perf.probes.large_m_probe --ncu
then ncu_csv_summary.py over the report's CSV pages.
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
SHAPES = [("deepseek-v3", 7168, 256, F32, None, m) for m in (64, 128)] + [
    ("kimi-k2", 7168, 384, F32, None, 128), ("gpt-oss-120b", 2880, 128, BF, BF, 128),
    ("gpt-oss-120b", 2880, 128, BF, BF, 1), ("deepseek-v3", 7168, 256, F32, None, 16)]
NCU = {("deepseek-v3", 128): [(16, 32, 4), (32, 64, 4), (64, 32, 4)], ("gpt-oss-120b", 128): [None],
       ("deepseek-v3", 16): [None], ("gpt-oss-120b", 1): [None]}


def configs(h, e, out, bias, m):
    pick = router_family.pick(BF, BF, out, bias, m, h, e, "dot" if m == 1 else "mma", True)
    cfgs = [pick]
    if pick.variant == "mma":
        for et, mt, warps in itertools.product((16, 32, 64), (16, 32, 64), (4, 8)):
            if mt > max(16, m):
                continue
            c = dataclasses.replace(pick, e_tile=et, m_tile=mt, consumer_warps=warps, split_k=1, stages=1)
            c = dataclasses.replace(c, split_k=min(8, -(-h // c.k_tile)))
            if stages := router_tiling.stages_for(c, h):
                cfgs.append(dataclasses.replace(c, stages=stages))
    return pick, list(dict.fromkeys(cfgs))


def label(c):
    return f"{c.variant} e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} st{c.stages} smem {c.smem_bytes() // 1024}K"


def main(ncu: bool):
    plan = [(s, *configs(*s[1:])) for s in SHAPES]
    if ncu:
        plan = [(s, pick, [c for c in cfgs if (c == pick and None in NCU.get((s[0], s[-1]), []))
                           or (c.e_tile, c.m_tile, c.consumer_warps) in NCU.get((s[0], s[-1]), [])])
                for s, pick, cfgs in plan]
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    for (name, h, e, out, bias, m), pick, cfgs in plan:
        od = getattr(torch, out)
        x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
        w = torch.randn(e, h, device=dev, dtype=torch.bfloat16)
        b = torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None
        if ncu:
            probe_kit.ncu_launches([(f"{name} M={m}: {label(c)}",
                                     lambda c=c: cute_kernels.router_gemm(x, w, b, out_dtype=od, config=c))
                                    for c in cfgs])
            continue
        probe_kit.print_ranked(f"{name} M={m}: pick {label(pick)}", probe_kit.router_rows(cfgs, x, w, b, od), label,
                               4e-3 if out == BF else 1e-5, [pick])


if __name__ == "__main__":
    main("--ncu" in sys.argv)
