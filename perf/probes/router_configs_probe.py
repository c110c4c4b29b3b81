"""Temporary probe: cold time of explicit router / fused-norm configs beside the heuristic's.
    python -m perf.probes.router_configs_probe
"""
import dataclasses, itertools
import torch
import cute_kernels
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import bridge, ops, timing
from cute_kernels.kernels.router_gemm import RouterGemm
dev = torch.device("cuda")

def bench(make, call, bpc):
    return timing.time_per_call(make, call, bytes_per_call=bpc, replays=15)["cold_us"]

def router(h, e, m):
    pick = router_family.pick("bfloat16", "bfloat16", "float32", None, m, h, e, "dot", True)
    make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), torch.randn(e, h, device=dev, dtype=torch.bfloat16),
                    torch.empty(m, e, device=dev))
    res = []
    for e_tile, split_k, warps in itertools.product((4, 8, 16, 32), (2, 4, 8), (4, 8)):
        if e_tile % warps: continue
        cfg = RouterGemm("bfloat16", "bfloat16", "float32", None, "dot", e_tile, pick.m_tile, split_k, 1, True, warps)
        cfg = dataclasses.replace(cfg, stages=max(1, router_tiling.stages_for(cfg, h)))
        t = bench(make, lambda x, w, o, cfg=cfg: cute_kernels.router_gemm(x, w, out=o, config=cfg), e * h * 2)
        res.append((t, cfg == pick, e_tile, split_k, warps, cfg.stages))
    res.sort()
    print(f"router H={h} E={e} M={m} pick e{pick.e_tile} s{pick.split_k}")
    for r in res[:8] + [r for r in res if r[1]]:
        print("  %s %.2f e%d s%d w%d st%d" % ("*" if r[1] else " ", r[0], *r[2:]), flush=True)

def fused(h, e, m):
    pick = router_family.pick_norm("bfloat16", "bfloat16", "bfloat16", "float32", m, h, e, True)
    make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16), torch.randn(e, h, device=dev, dtype=torch.bfloat16),
                    torch.rand(1, h, device=dev, dtype=torch.bfloat16), torch.empty(m, e, device=dev),
                    torch.empty(m, h, device=dev, dtype=torch.bfloat16))
    res = []
    m_tiles = sorted({pick.m_tile, max(1, pick.m_tile // 2), max(1, pick.m_tile // 4)})
    for e_tile, split_k, warps, m_tile in itertools.product((4, 8, 16, 32), (4, 8), (4, 8), m_tiles):
        if e_tile % warps: continue
        cfg = dataclasses.replace(pick, e_tile=e_tile, split_k=split_k, consumer_warps=warps, m_tile=m_tile, stages=1)
        cfg = dataclasses.replace(cfg, k_slots=-(-(-(-h // cfg.k_tile)) // split_k))
        st = router_tiling.stages_for(cfg, h)
        if st < 1: continue
        cfg = dataclasses.replace(cfg, stages=st)
        fn = bridge.compiled(cfg, dev)
        t = bench(make, lambda x, w, nw, o, n, fn=fn: bridge.launch(fn, dev, x, w, nw, o, n, 1e-6), e * h * 2)
        res.append((t, cfg == pick, e_tile, split_k, warps, m_tile, cfg.stages))
    res.sort()
    print(f"fused H={h} E={e} M={m} pick e{pick.e_tile} s{pick.split_k} m{pick.m_tile}")
    for r in res[:8] + [r for r in res if r[1]]:
        print("  %s %.2f e%d s%d w%d m%d st%d" % ("*" if r[1] else " ", r[0], *r[2:]), flush=True)

for m in (1, 2, 4):
    router(7168, 256, m)
router(7168, 384, 4)
for m in (1, 4, 16):
    fused(7168, 384, m)
