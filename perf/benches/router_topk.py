"""The routing step, x -> each token's top-k experts: what ``perf/sweep.py --op router_topk``
times, per preset (its own routing config) x M.

- ``cute-fused``: ``cute_kernels.router_topk`` (one kernel), PDL on (``--pdl-off`` adds off);
- ``unfused``: the dispatcher's unfused tier, this project's router GEMM then ``cute_kernels.route``
  (two kernels, each with PDL);
- ``torch``: the dispatcher's torch tier, the composite a model runs without kernels (fp32
  ``F.linear``, then the spec's scoring and top-k in torch ops);
- ``dispatch``: ``dispatch.router_topk``; its rows name the tier it ran;
- ``router_gemm``: ``dispatch.router_gemm`` into fp32 logits alone, the GEMM the fused step is
  held against (same run).
Each in modes b2b and chain (the producer writes x). Speedups are over ``torch``. Also measured
(``meta.route_alone_us``): ``cute_kernels.route`` on its own, after itself and after a producer
that writes the logits, for DeepSeek-V3 and Kimi-K2 at M = 1, 16 and 128.

    python -m perf.benches router_topk [sweep options]   # = python perf/sweep.py --op router_topk
"""

import traceback

import torch

from cute_kernels import presets, timing
from dispatch.ops import router_topk as op
from perf.bench import B2B, CHAIN, Bench, Case, Impl
from perf.benches.router_gemm import DT, check_close

OP = "router_topk"
SIZES = [1, 4, 16, 64, 128, 256]
POINT = ("preset", "H", "E", "w_dtype", "bias", "M")
QUICK_PRESETS = ["deepseek-v3", "kimi-k2", "qwen3-235b-a22b"]
QUICK_SIZES = [1, 16, 128]


def points(preset_names=None, shapes=None, sizes=None, quick=False) -> list:
    """A point per (preset, M); every preset by default (shapes name presets' routings only)."""
    if quick:
        preset_names, sizes = preset_names or QUICK_PRESETS, sizes or QUICK_SIZES
    names = preset_names or list(presets.PRESETS)
    return [{"preset": n, "H": presets.get(n).hidden_size, "E": presets.get(n).num_experts,
             "w_dtype": presets.get(n).gate_dtype, "bias": presets.get(n).gate_bias, "M": m}
            for n in names for m in sizes or SIZES]


def series(point) -> str:
    return point["preset"]


def tuning_key(point):
    return ("bfloat16", point["w_dtype"]), (point["H"], point["E"])


def bytes_per_call(point) -> int:
    """W once, x once, the top-k written (the logits stay in L2)."""
    k = presets.get(point["preset"]).top_k
    return (point["E"] * point["H"] * DT[point["w_dtype"]].itemsize + point["M"] * point["H"] * 2
            + point["M"] * k * 8)


def problem(point) -> op.RouterTopkProblem:
    p = presets.get(point["preset"])
    wd = DT[point["w_dtype"]]
    return op.RouterTopkProblem(torch.device("cuda", 0), torch.bfloat16, wd, (wd, torch.Size([p.num_experts]))
                                if p.gate_bias else None, p.hidden_size, torch.Size([p.num_experts, p.hidden_size]),
                                p.routing, (torch.float32, torch.Size([p.num_experts]))
                                if p.routing.correction_bias else None, False, True)


def unavailable(impl: str, point) -> str | None:
    if impl in ("dispatch", "router_gemm"):
        return None
    return op.OP.tier(impl).eligible(problem(point))


def make_inputs(point):
    p = presets.get(point["preset"])
    h, e, m, k = p.hidden_size, p.num_experts, point["M"], p.top_k
    wd = DT[point["w_dtype"]]

    def make():
        x = torch.randn(m, h, device="cuda").to(torch.bfloat16)
        w = (torch.randn(e, h, device="cuda") / h ** 0.5).to(wd)
        b = (torch.randn(e, device="cuda") * 0.1).to(wd) if p.gate_bias else None
        cb = torch.randn(e, device="cuda") * 0.1 if p.routing.correction_bias else None
        return (x, w, b, cb, torch.empty(m, k, device="cuda"), torch.empty(m, k, dtype=torch.int32, device="cuda"),
                torch.empty(m, e, device="cuda"))
    return make


def _call(impl: str, pdl: bool, point):
    import cute_kernels
    import dispatch

    routing = presets.get(point["preset"]).routing
    if impl == "cute-fused":
        return lambda x, w, b, cb, ow, oi, lo: cute_kernels.router_topk(
            x, w, b, routing=routing, correction_bias=cb, out_weights=ow, out_ids=oi, logits_out=lo, pdl=pdl)
    if impl == "dispatch":
        return lambda x, w, b, cb, ow, oi, lo: dispatch.router_topk(
            x, w, b, routing=routing, correction_bias=cb, out_weights=ow, out_ids=oi, logits_out=lo)
    if impl == "router_gemm":
        return lambda x, w, b, cb, ow, oi, lo: dispatch.router_gemm(x, w, b, out=lo)
    tier = op.OP.tier(impl).impl
    return lambda x, w, b, cb, ow, oi, lo: tier(x, w, b, routing, cb, ow, oi, lo, False)


def case(impl: str, pdl: bool, point) -> Case:
    """The call, outputs poisoned, then each checked: the logits against the spec, the selection
    against the spec's routing of those logits (ids exact up to near-ties: a row may swap
    experts whose choice values agree to 1e-6)."""
    import dispatch
    from cute_kernels import reference

    routing = presets.get(point["preset"]).routing

    def poison(inputs):
        inputs[4].fill_(float("nan")), inputs[5].fill_(-1), inputs[6].fill_(float("nan"))

    def check(inputs):
        x, w, b, cb, weights, ids, logits = inputs
        what = f"{OP} {point['preset']} M={point['M']} {impl} pdl={pdl}"
        check_close(what + " logits", logits, reference.router_gemm(x, w, b, out_dtype=torch.float32), 1e-5)
        if impl == "router_gemm":
            return
        want_w, want_ids = reference.route(logits, routing, cb)
        agree = (ids == want_ids).all(dim=1)
        if int((~agree).sum()) > max(1, point["M"] // 100):
            raise AssertionError(f"{what}: {int((~agree).sum())} rows chose other experts")
        if agree.any():
            check_close(what + " weights", weights[agree], want_w[agree], 1e-6)

    tier = None
    if impl == "dispatch":
        x, w, b, cb, *_ = make_inputs(point)()
        tier = dispatch.explain(OP, x, w, b, routing=routing, correction_bias=cb).tier
    return Case(make_inputs(point), _call(impl, pdl, point), poison, check, tier)


def extra_meta(pts, replays: int) -> dict:
    """``cute_kernels.route`` alone (the unfused tier's second kernel), b2b and after a producer
    writing the logits, where the sweep covers DeepSeek-V3 or Kimi-K2."""
    import cute_kernels

    out = {}
    for name in ("deepseek-v3", "kimi-k2"):
        if name not in {p["preset"] for p in pts}:
            continue
        p = presets.get(name)
        for m in (1, 16, 128):
            def make(m=m, p=p):
                return (torch.randn(m, p.num_experts, device="cuda"), torch.randn(p.num_experts, device="cuda") * 0.1,
                        torch.empty(m, p.top_k, device="cuda"), torch.empty(m, p.top_k, dtype=torch.int32,
                                                                            device="cuda"))

            def call(logits, cb, w, i, p=p):
                cute_kernels.route(logits, routing=p.routing, correction_bias=cb, out_weights=w, out_ids=i)

            try:
                nbytes = m * p.num_experts * 4
                b2b = timing.time_per_call(make, call, bytes_per_call=nbytes, replays=replays)["cold_us"]
                chain = timing.time_per_call(make, call, bytes_per_call=nbytes, replays=replays,
                                             producer=timing.mul_producer(0))["cold_us"]
                out[f"{name} M={m}"] = {"b2b": round(b2b, 3), "chain": round(chain, 3)}
            except Exception:  # noqa: BLE001 - the sweep's rows matter more than this figure
                traceback.print_exc()
    print(f"route alone, us per call: {out}", flush=True)
    return {"route_alone_us": out}


BENCH = Bench(
    op=OP, size="M", point_fields=POINT,
    impls=(
        Impl("cute-fused", "cute_kernels.router_topk: GEMM, scoring and top-k in one kernel", pdl=True, pdl_off=True),
        Impl("unfused", "dispatch tier unfused: this project's router GEMM, then cute_kernels.route", pdl=True),
        Impl("torch", "dispatch tier torch: fp32 F.linear, then the spec's routing in torch ops"),
        Impl("dispatch", "dispatch.router_topk (row field 'tier': the tier it ran)", pdl=True),
        Impl("router_gemm", "dispatch.router_gemm into fp32 logits: the GEMM alone", pdl=True),
    ),
    baselines=("torch",), inputs=("x", "w", "b", "cb", "weights", "ids", "logits"), main_input="x",
    modes=(B2B, CHAIN), points=points, series=series, tuning_key=tuning_key, bytes_per_call=bytes_per_call,
    case=case, unavailable=unavailable, extra_meta=extra_meta,
)
