"""An op's result against the spec (``cute_kernels.reference``), in float64, with the tolerances
the GPU tests state (``tests/spec_check.py``): what ``cute-kernels demo`` holds every result to.

- pack_topk: bit-exact.
- silu_mul_quant_fp8: scales within 1e-6 relative (ue8m0 scales exact), q within one e4m3 step
  where the scales are finite and identical elsewhere, NaN exactly where the spec's are.
- router_gemm / norm_router_gemm logits: fp32 within a relative Frobenius error of 1e-5, bf16
  within one bf16 ulp plus a bound on the fp32 accumulation error; normed x within one ulp of
  its dtype. NaN and +-inf exactly where the spec has them.
- router_topk / norm_router_topk: against the spec's routing of its float64-then-fp32 logits, with
  the bound e on the fp32 accumulation error of each row's logits (as for bf16 logits): ids
  identical except in rows whose chosen choice values agree with the spec's, as sets, within
  2e + 1e-5 relative (only near-ties can swap), weights within 1e-5 + 4e relative where the ids
  agree; NaN weights exactly where the spec's are.
"""

from __future__ import annotations

import torch

from . import reference as spec
from .checks import dtype_name

def mismatch(op: str, a: dict, got: tuple) -> str | None:
    """Why ``got`` (``op``'s outputs, in the order it returns them) is not the spec's result on
    the arguments ``a`` (by parameter name); None when it is, within the tolerances."""
    if op == "pack_topk":
        want = spec.pack_topk(a["ids"], a["weights"])
        return _layout(got[0], want) or (None if torch.equal(got[0], want) else
                                         f"{int((got[0] != want).sum())} of {want.numel()} packed values differ")
    if op == "silu_mul_quant_fp8":
        return _silu(a, *got)
    if op == "router_gemm":
        want = spec.router_gemm(a["x"], a["weight"], a["bias"], a["out_dtype"])
        return _logits(got[0], want, a["x"], a["weight"])
    if op == "norm_router_gemm":
        normed, logits = spec.norm_router_gemm(a["x"], a["norm_weight"], a["gate_weight"], a["eps"], a["out_dtype"])
        why = _layout(got[0], normed) or _special(got[0], normed)
        finite = _finite(normed)
        if why is None and not _within_ulp(got[0][finite], normed[finite], normed.dtype):
            why = "beyond one ulp"
        return f"normed x: {why}" if why else _logits(got[1], logits, normed, a["gate_weight"])
    if op == "router_topk":
        logits = spec.router_gemm(a["x"], a["weight"], a["bias"], torch.float32)
        return _selection(got, logits, _sum_error(a["x"], a["weight"]), a)
    if op == "norm_router_topk":
        normed, logits = spec.norm_router_gemm(a["x"], a["norm_weight"], a["gate_weight"], a["eps"], torch.float32)
        why = _layout(got[0], normed) or _special(got[0], normed)
        return f"normed x: {why}" if why else _selection(got[1:], logits, _sum_error(normed, a["gate_weight"]), a)
    raise ValueError(f"no spec check for op {op!r}")


def _scores(logits, scoring: str):
    """Every expert's score as ``reference.route`` defines it (the topk_* scorings: the logits)."""
    if scoring == "softmax":
        return torch.softmax(logits, dim=1)
    if scoring == "sigmoid":
        return torch.sigmoid(logits)
    if scoring == "sqrt_softplus":
        return torch.nn.functional.softplus(logits).sqrt()
    return logits


def _sum_error(a, b):
    """Per row, a bound on the fp32 accumulation error of the logits ``a @ b.T``."""
    return (8 * a.shape[1] ** 0.5 * 2.0**-24 * (a.double().abs() @ b.double().abs().T)).amax(dim=1, keepdim=True)


def _selection(got, logits, logit_error, a) -> str | None:
    """The routing of logits whose fp32 sums may be off by ``logit_error`` (per row): a score
    moves by at most that much (each scoring's slope is at most 1 per unit of logit, softmax's
    relative change at most twice it), so choice values within it of each other may swap."""
    routing, cbias = a["routing"], a["correction_bias"]
    want_w, want_ids = spec.route(logits, routing, cbias)
    weights, ids = got[0], got[1]  # the outputs out_weights, out_ids (then logits_out)
    if a["packed"]:  # the packed values are in out_ids
        weights, ids = (ids & 0xFFFF).to(torch.int16).view(torch.bfloat16).float(), (ids >> 16) & 0xFFFF
        want_w = want_w.to(torch.bfloat16).float()
    if not torch.equal(weights.isnan(), want_w.isnan()):
        return "weights: NaN where the spec has none, or the reverse"
    same = (ids == want_ids).all(dim=1)
    if not same.all():
        choice = _scores(logits.double(), routing.scoring) + (0 if cbias is None else cbias.double())
        g = choice.gather(1, ids[~same].long()).sort(dim=1).values.double()
        w = choice.gather(1, want_ids[~same].long()).sort(dim=1).values.double()
        slack = 2 * logit_error[~same] + 1e-5 * w.abs()
        if not ((g - w).abs() <= slack).all():
            return f"{int((~same).sum())} rows chose other experts than the spec, and not near-ties"
    g, w = weights[same].double(), want_w[same].double()
    rtol = 1e-5 + 4 * logit_error[same]  # softmax-like weights: relative change up to 2x the logits' (x2 renormalised)
    ok = ((g - w).abs() <= rtol * w.abs() + 1e-30) | w.isnan()
    return None if ok.all() else f"{int((~ok).sum())} weights beyond 1e-5 relative"


def _layout(got, want) -> str | None:
    if got.dtype != want.dtype or got.shape != want.shape:
        return (f"{dtype_name(got.dtype)} {list(got.shape)} where the spec gives {dtype_name(want.dtype)} "
                f"{list(want.shape)}")
    return None


def _finite(want):
    return ~(want.isnan() | want.isinf())


def _special(got, want) -> str | None:
    if not torch.equal(got.isnan(), want.isnan()):
        return "NaN where the spec has none, or the reverse"
    inf = want.isinf()
    if not (torch.equal(got.isinf(), inf) and torch.equal(got[inf], want[inf])):
        return "+-inf differ from the spec"
    return None


_ULP = {torch.bfloat16: (7, -126), torch.float16: (10, -14)}  # mantissa bits, smallest normal exponent


def _within_ulp(got, want, dtype, slack=0.0) -> bool:
    """|got - want| <= one ulp of ``dtype`` at want's magnitude + ``slack``."""
    bits, emin = _ULP[dtype]
    want64 = want.double()
    ulp = torch.exp2(torch.floor(torch.log2(want64.abs().clamp_min(2.0**emin))) - bits)
    return bool(((got.double() - want64).abs() <= ulp + slack).all())


def _logits(got, want, a, b) -> str | None:
    """Logits of ``a @ b.T``: fp32 by relative Frobenius error, bf16 by one ulp plus a bound on
    the fp32 accumulation error (8 sqrt(H) 2**-24 |a| @ |b|.T)."""
    why = _layout(got, want) or _special(got, want)
    if why is not None:
        return f"logits: {why}"
    finite = _finite(want)
    if got.dtype == torch.float32:
        g, w = got[finite].double(), want[finite].double()
        err = float(torch.linalg.norm(g - w) / torch.linalg.norm(w).clamp_min(1e-300))
        return None if err <= 1e-5 else f"logits: relative Frobenius error {err:.3g} > 1e-5"
    slack = (8 * a.shape[1] ** 0.5 * 2.0**-24 * (a.double().abs() @ b.double().abs().T))[finite]
    return None if _within_ulp(got[finite], want[finite], got.dtype, slack) else "logits beyond one ulp"


def _silu(a, q, scales) -> str | None:
    group = a["group_size"]
    want_q, want_s = spec.silu_mul_quant_fp8(a["x"], group, scale_ub=a["scale_ub"], ue8m0=a["ue8m0"],
                                             scale_layout=a["scale_layout"])
    why = _layout(q, want_q) or _layout(scales, want_s)
    if why is not None:
        return why
    if min(want_s.shape) > 1 and scales.stride() != want_s.stride():
        return f"scales have strides {scales.stride()}, the spec's {want_s.stride()}"
    gs, ws = scales.double(), want_s.double()
    if not torch.equal(gs.isnan(), ws.isnan()):
        return "scales: NaN where the spec has none, or the reverse"
    off = ~ws.isnan() & (gs != ws)
    if not a["ue8m0"]:
        off &= (gs - ws).abs() > 1e-6 * ws.abs()
    if off.any():
        return f"{int(off.sum())} of {ws.numel()} scales differ{'' if a['ue8m0'] else ' beyond 1e-6 relative'}"
    gq, wq = q.double(), want_q.double()
    if not torch.equal(gq.isnan(), wq.isnan()):
        return "q: NaN where the spec has none, or the reverse"
    g_scale, w_scale = gs.repeat_interleave(group, dim=1), ws.repeat_interleave(group, dim=1)
    ok = gq.isnan()
    finite = ~ok & torch.isfinite(g_scale) & torch.isfinite(w_scale)
    step = torch.exp2(torch.floor(torch.log2(torch.maximum(gq.abs(), wq.abs()).clamp_min(2.0**-6))) - 3)
    ok |= finite & ((gq - wq).abs() <= step)
    ok |= ~finite & (gq == wq)  # inf / NaN scales: q is 0, +-448 or NaN and must be identical
    return None if ok.all() else f"{int((~ok).sum())} of {ok.numel()} q values beyond one e4m3 step"
