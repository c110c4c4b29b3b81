"""Probe: the tensor-core router with its H split reduced across a cluster (DSMEM) or through a
global workspace (last CTA to arrive sums), cold and hot, PDL on, with each config's error
against the float64 product checked first.
    python -m perf.probes.split_reduce_probe
"""
import dataclasses, itertools
import torch
import cute_kernels
from perf.probes import probe_kit
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops, timing

dev = torch.device("cuda")
BF, F32 = "bfloat16", "float32"
SHAPES = ([("deepseek-v3", 7168, 256, F32, None, m) for m in (1, 4, 8, 16, 32, 64, 128)]
          + [("kimi-k2", 7168, 384, F32, None, m) for m in (16, 128)]
          + [("gpt-oss-120b", 2880, 128, BF, BF, m) for m in (16, 128)]
          + [("qwen3-235b", 4096, 128, F32, None, m) for m in (16, 64)])


def configs(h, e, out, bias, m):
    pick = router_family.pick(BF, BF, out, bias, m, h, e, "mma", True)
    cfgs = [pick]
    tiles = [pick.m_tile] + ([pick.m_tile // 2] if pick.m_tile >= 32 else [])
    for tile, et, s, red in itertools.product(tiles, (16, 32, 64), (4, 8, 16, 32), ("global", "cluster")):
        if red == "cluster" and s > 8:
            continue
        c = dataclasses.replace(pick, e_tile=et, m_tile=tile, split_k=s, reduce=red, stages=1)
        if s > -(-h // c.k_tile):
            continue
        stages = router_tiling.stages_for(c, h)
        if stages:
            cfgs.append(dataclasses.replace(c, stages=stages))
    return pick, list(dict.fromkeys(cfgs))


def main():
    plan = [(s, *configs(*s[1:])) for s in SHAPES]
    probe_kit.compile_all(c for *_, cfgs in plan for c in cfgs)
    for (name, h, e, out, bias, m), pick, cfgs in plan:
        od = getattr(torch, out)
        res = []
        for c in cfgs:
            x = torch.randn(m, h, device=dev, dtype=torch.bfloat16)
            w = torch.randn(e, h, device=dev, dtype=torch.bfloat16)
            b = torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None
            want = x.double() @ w.double().T + (0 if b is None else b.double())
            o = torch.full((m, e), float("nan"), device=dev, dtype=od)
            got = cute_kernels.router_gemm(x, w, b, out_dtype=od, out=o, config=c)
            again = cute_kernels.router_gemm(x, w, b, out_dtype=od, config=c)
            err = ((got.double() - want).norm() / want.norm()).item()
            same = torch.equal(got, again)
            make = lambda: (torch.randn(m, h, device=dev, dtype=torch.bfloat16),
                            torch.randn(e, h, device=dev, dtype=torch.bfloat16),
                            torch.randn(e, device=dev, dtype=torch.bfloat16) if bias else None,
                            torch.empty(m, e, device=dev, dtype=od))
            call = lambda x, wt, b, o, c=c: cute_kernels.router_gemm(x, wt, b, out_dtype=od, out=o, config=c)
            r = timing.time_per_call(make, call, bytes_per_call=e * h * 2, replays=15)
            res.append((r["cold_us"], r["hot_us"], c == pick, c, err, same))
        res.sort(key=lambda t: t[0])
        print(f"{name} M={m}: pick e{pick.e_tile} m{pick.m_tile} s{pick.split_k} {pick.reduce}")
        for cold, hot, is_pick, c, err, same in res:
            flag = "" if err < (4e-3 if out == BF else 1e-5) and same else "  WRONG" if same else "  NONDETERMINISTIC"
            print(f"  {'*' if is_pick else ' '} cold {cold:5.2f} hot {hot:5.2f}  e{c.e_tile} m{c.m_tile} s{c.split_k} "
                  f"{c.reduce:7s} st{c.stages}  err {err:.1e}{flag}", flush=True)


if __name__ == "__main__":
    main()
