"""Probe: tilings of the tensor-core router with fp32 weights (bf16 x, each weight fed as three
exact bf16 parts) for MiniMax-M2 (3072 x 256) and MiniMax-M3 (6144 x 128). Per M: the
heuristic's pick and expert tiles 16-64 x token tiles 8-64 x a 4- or 8-way cluster split of H,
cold and hot, PDL on, each checked against the float64 product first:
    python -m perf.probes.fp32_weight_mma_probe
"""
import dataclasses, itertools
import torch
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
SHAPES = [(name, h, e, m) for name, h, e in (("minimax-m2", 3072, 256), ("minimax-m3", 6144, 128))
          for m in (8, 16, 32, 64, 128)]


def configs(h, e, m):
    pick = router_family.pick(BF, F32, F32, None, m, h, e, "mma", True)
    cfgs = [pick]
    for et, mt, split in itertools.product((16, 32, 64), (8, 16, 32, 64), (4, 8)):
        if mt > max(8, m) or (mt < m and mt < 16):
            continue
        c = dataclasses.replace(pick, e_tile=et, m_tile=mt, split_k=split, stages=1)
        if stages := router_tiling.stages_for(c, h):
            cfgs.append(dataclasses.replace(c, stages=stages))
    return pick, list(dict.fromkeys(cfgs))


def label(c):
    return f"e{c.e_tile} m{c.m_tile} s{c.split_k} w{c.consumer_warps} st{c.stages} smem {c.smem_bytes() // 1024}K"


def main():
    plan = [(s, *configs(*s[1:])) for s in SHAPES]
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    for (name, h, e, m), pick, cfgs in plan:
        x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
        w = torch.randn(e, h, device=dev, dtype=torch.float32)
        probe_kit.print_ranked(f"{name} M={m}: pick {label(pick)}", probe_kit.router_rows(cfgs, x, w), label, 1e-5,
                               [pick], limit=8)


if __name__ == "__main__":
    main()
