"""Host (CPU) cost per eager call at M = 1, the decode case: the public ops beside torch's, and a
breakdown of the dispatched router GEMM's call. Each figure is ``timing.eager_overhead_us``: N
back-to-back eager calls, one synchronize, divided by N; the GPU work is far shorter than the
host's, so the figure is the host's.

    python -m perf.benches host_overhead --out perf/results/h100      # GPU

Writes <out>/host_overhead.json (``{"meta", "rows"}``; a row: ``call``, ``kind`` ("op", or
"part" of the dispatched router GEMM's call, or "host": one bare torch launch, the yardstick
between hosts), ``problem``, ``us``) and the CSV beside it.
"""

import argparse
import pathlib
import platform
import sys

import torch
import torch.nn.functional as F

from cute_kernels import presets, timing

N = 2000
BF16, FP32 = torch.bfloat16, torch.float32


def _inputs(h: int, e: int, dtype=BF16):
    """x [1, H] and a weight [E, H]."""
    return torch.randn(1, h, device="cuda").to(dtype), (torch.randn(e, h, device="cuda") / h**0.5).to(dtype)


def router_calls() -> dict:
    """The router GEMM at DeepSeek-V3's shape: x bf16 [1, 7168], W bf16 [256, 7168] -> fp32."""
    import cute_kernels
    import dispatch

    p = presets.get("deepseek-v3")
    x, w = _inputs(p.hidden_size, p.num_experts)
    return {"dispatch.router_gemm": lambda: dispatch.router_gemm(x, w),
            "cute_kernels.router_gemm": lambda: cute_kernels.router_gemm(x, w),
            "F.linear": lambda: F.linear(x, w),
            "torch.mm(out_dtype=float32)": lambda: torch.mm(x, w.T, out_dtype=FP32)}


def router_overhead() -> dict:
    """us per eager call of each of ``router_calls``."""
    return {name: round(timing.eager_overhead_us(call, (), N), 2) for name, call in router_calls().items()}


def router_parts() -> dict:
    """What one dispatched router GEMM call at DeepSeek-V3's shape is made of: the compiled
    function alone (its output preallocated), the output allocation (as the launcher makes it,
    and as ``torch.empty`` with a size tuple), the dispatcher's problem key."""
    import dispatch
    from cute_kernels import bridge
    from cute_kernels.kernels.router_gemm import tiling as router_tiling
    from dispatch.ops import router_gemm as router

    p = presets.get("deepseek-v3")
    x, w = _inputs(p.hidden_size, p.num_experts)
    e = p.num_experts
    parts = {"output allocation: x.new_empty(1, E, dtype=float32)": lambda: x.new_empty(1, e, dtype=FP32),
             "output allocation: torch.empty((1, E), dtype=float32, device=)":
                 lambda: torch.empty((1, e), dtype=FP32, device=x.device),
             "dispatcher problem key: router.problem_key": lambda: router.problem_key(x, w, None, FP32, None)}
    tier = dispatch.explain("router_gemm", x, w).tier
    if tier.startswith("cute-"):
        kernel = router_tiling.pick("bfloat16", "bfloat16", "float32", None, 1, p.hidden_size, e,
                                    tier.removeprefix("cute-"), True, bridge.num_sms(x.device.index))
        fn, no_bias = bridge.compiled(kernel, x.device), torch.zeros(1, device="cuda")
        ws = bridge.workspace(x.device, kernel.workspace_ints(1, e)) if kernel.uses_workspace else torch.zeros(
            1, dtype=torch.int32, device="cuda")
        out = x.new_empty(1, e, dtype=FP32)
        parts[f"compiled function alone ({tier}, out preallocated)"] = lambda: fn(x, w, no_bias, out, ws)
    return parts


def other_calls() -> dict:
    """The other dispatched ops at M = T = 1."""
    import dispatch

    pro = presets.get("deepseek-v4-pro")
    xn, gate = _inputs(pro.hidden_size, pro.num_experts)
    norm_weight = torch.ones(pro.hidden_size, dtype=BF16, device="cuda")
    ids = torch.randint(0, 256, (1, 8), device="cuda")  # int64, as torch.topk gives them
    weights = torch.rand(1, 8, device="cuda")
    return {"dispatch.norm_router_gemm": ("deepseek-v4-pro: x bf16 [1, 7168], gate bf16 [384, 7168]",
                                          lambda: dispatch.norm_router_gemm(xn, norm_weight, gate)),
            "dispatch.pack_topk": ("ids int64 [1, 8], weights fp32 [1, 8]", lambda: dispatch.pack_topk(ids, weights))}


def measure() -> list:
    v3 = "deepseek-v3: x bf16 [1, 7168], W bf16 [256, 7168]"
    t = torch.zeros(1, device="cuda")
    rows = [("op", name, v3, call) for name, call in router_calls().items()]
    rows += [("op", name, problem, call) for name, (problem, call) in other_calls().items()]
    rows += [("part", name, v3, call) for name, call in router_parts().items()]
    rows.append(("host", "torch add_ (one bare launch)", "[1] fp32", lambda: t.add_(1)))
    return [{"call": name, "kind": kind, "problem": problem, "us": round(timing.eager_overhead_us(call, (), N), 2)}
            for kind, name, problem, call in rows]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, required=True, help="output directory, e.g. perf/results/h100")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark times eager GPU calls", file=sys.stderr)
        return 2
    from dispatch import environment, tuning

    meta = timing.device_meta()
    meta.update(arch=environment.device_arch(torch.device("cuda")), python=platform.python_version(),
                command=" ".join(["python", "-m", "perf.benches", "host_overhead", *argv]),
                tuning_source=tuning.table()[0], op="host_overhead", calls_per_figure=N)
    rows = measure()
    for row in rows:
        print(f"{row['kind']:<5} {row['call']:<62} {row['us']:>7.2f} us", flush=True)
    path = args.out / "host_overhead.json"
    timing.write_results(path, meta, rows)
    print(f"wrote {path} and {path.with_suffix('.csv').name}")
    return 0
