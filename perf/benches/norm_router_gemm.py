"""RMSNorm + router GEMM: what ``perf/sweep.py --op norm_router_gemm`` times, per preset x M.

One implementation per dispatcher tier, plus the dispatcher itself:
- ``cute-fused``: ``cute_kernels.norm_router_gemm`` (one kernel), PDL on; only where the package has it;
- ``unfused``: the dispatcher's fp32 RMSNorm, then the router GEMM dispatch on the fp32 rows;
- ``torch``: both halves in fp32 torch (the spec's math);
- ``dispatch``: ``dispatch.norm_router_gemm`` with the shipped tuning table (rows name the tier).
Each in modes b2b and chain (the producer writes x, the residual sum a model norms). Speedups
are over ``torch``. Default presets: those that fuse the norm into the router.

    python -m perf.benches norm_router_gemm [sweep options]   # = python perf/sweep.py --op norm_router_gemm
"""

import torch

from cute_kernels import presets
from dispatch.ops import norm_router_gemm as norm_router
from perf.bench import B2B, CHAIN, Bench, Case, Impl
from perf.benches import router_gemm

OP = "norm_router_gemm"
POINT = ("preset", "H", "E", "x_dtype", "norm_dtype", "w_dtype", "out_dtype", "M")
QUICK_PRESETS = ["deepseek-v4-flash"]
EPS = 1e-6
DT = router_gemm.DT


def points(preset_names=None, shapes=None, sizes=None, quick=False) -> list:
    """A point per (problem, M); problems from presets (default: the norm+router ones) and ``HxE``."""
    if quick:
        preset_names, sizes = preset_names or ([] if shapes else QUICK_PRESETS), sizes or router_gemm.QUICK_SIZES
    if not preset_names and not shapes:
        preset_names = [p.name for p in presets.PRESETS.values() if p.norm_router]
    return [{k: "bfloat16" if k == "norm_dtype" else p[k] for k in POINT}
            for p in router_gemm.points(preset_names, shapes, sizes or router_gemm.SIZES)]


def bytes_per_call(point) -> int:
    """Gate weight and norm weight once, x read, normed x and logits written."""
    m, h, e = point["M"], point["H"], point["E"]
    x = DT[point["x_dtype"]].itemsize
    return (e * h * DT[point["w_dtype"]].itemsize + h * DT[point["norm_dtype"]].itemsize + 2 * m * h * x
            + m * e * DT[point["out_dtype"]].itemsize)


def unavailable(impl: str, point) -> str | None:
    """Why ``impl`` cannot run at ``point`` (the tier's own eligibility), or None."""
    if impl == "dispatch":
        return None
    p = norm_router.NormRouterProblem(torch.device("cuda", 0), DT[point["x_dtype"]], DT[point["norm_dtype"]],
                                      DT[point["w_dtype"]], DT[point["out_dtype"]], point["H"],
                                      torch.Size([point["E"], point["H"]]), True)
    return norm_router.OP.tier(impl).eligible(p)


def make_inputs(point):
    h, e, m = point["H"], point["E"], point["M"]
    x_dtype, out_dtype = DT[point["x_dtype"]], DT[point["out_dtype"]]

    def make():
        x = torch.randn(m, h, device="cuda").to(x_dtype)
        norm_weight = (1 + 0.2 * torch.randn(h, device="cuda")).to(DT[point["norm_dtype"]])
        gate = (torch.randn(e, h, device="cuda") / h ** 0.5).to(DT[point["w_dtype"]])
        return (x, norm_weight, gate, torch.empty(m, h, dtype=x_dtype, device="cuda"),
                torch.empty(m, e, dtype=out_dtype, device="cuda"))
    return make


def _call(impl: str, pdl: bool, point):
    import cute_kernels
    import dispatch

    out_dtype = DT[point["out_dtype"]]
    if impl == "cute-fused":
        return lambda x, nw, g, normed, logits: cute_kernels.norm_router_gemm(
            x, nw, g, EPS, out_dtype=out_dtype, normed_out=normed, logits_out=logits, pdl=pdl)
    if impl == "dispatch":
        return lambda x, nw, g, normed, logits: dispatch.norm_router_gemm(
            x, nw, g, EPS, out_dtype=out_dtype, normed_out=normed, logits_out=logits)
    tier = norm_router.OP.tier(impl).impl
    return lambda x, nw, g, normed, logits: tier(x, nw, g, EPS, out_dtype, normed, logits)


def case(impl: str, pdl: bool, point) -> Case:
    """The call, both outputs poisoned and checked against the spec; the dispatcher's tier named."""
    import dispatch
    from cute_kernels import reference

    out_dtype = DT[point["out_dtype"]]
    what = f"{OP} {point['preset']} M={point['M']} {impl} pdl={pdl}"

    def check(inputs):
        x, nw, g, normed, logits = inputs
        want_normed, want_logits = reference.norm_router_gemm(x, nw, g, EPS, out_dtype=torch.float32)
        # normed: one rounding of x's dtype; fp32 logits: an fp32 sum; bf16 logits: one bf16 rounding
        router_gemm.check_close(f"{what} normed", normed, want_normed, 1e-2)
        router_gemm.check_close(f"{what} logits", logits, want_logits, 1e-5 if out_dtype == torch.float32 else 1e-2)

    tier = None
    if impl == "dispatch":
        x, nw, g, _, _ = make_inputs(point)()
        tier = dispatch.explain(OP, x, nw, g, EPS, out_dtype=out_dtype).tier
    return Case(make_inputs(point), _call(impl, pdl, point), router_gemm.poison_outputs(3, 4), check, tier)


BENCH = Bench(
    op=OP, size="M", point_fields=POINT,
    impls=(
        Impl("cute-fused", "cute_kernels.norm_router_gemm", pdl=True, pdl_off=True),
        Impl("unfused", "dispatch tier unfused: fp32 RMSNorm, then dispatch.router_gemm on the fp32 rows"),
        Impl("torch", "dispatch tier torch: fp32 RMSNorm and fp32 F.linear"),
        Impl("dispatch", f"dispatch.norm_router_gemm {router_gemm.DISPATCH}", pdl=True),
    ),
    baselines=("torch",), inputs=("x", "norm_weight", "gate", "normed", "logits"), main_input="x",
    modes=(B2B, CHAIN), points=points, series=router_gemm.series, tuning_key=router_gemm.tuning_key,
    bytes_per_call=bytes_per_call, case=case, unavailable=unavailable,
)
