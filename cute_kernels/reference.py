"""The spec: plain-torch reference implementations of every op in cute-kernels.

This module is the single source of truth for what each op computes. Every test imports it,
and every kernel is judged against it. It depends on torch, the standard library and ``cute_kernels.checks`` only, and
runs on CPU and CUDA tensors alike (including empty batches, M = 0 / T = 0).

Where rounding happens
----------------------
``router_gemm`` and ``norm_router_gemm`` compute everything in float64 and round each output
exactly once, to its dtype, at the very end. Every product of two inputs (bf16/fp16/fp32) is
exact in float64 (at most 24 + 24 significand bits), so the only float64 error is in the sums:
at most about H * 2**-53 relative, far below half an fp32 ulp (2**-25). The result is therefore
the correctly rounded answer, except for a value lying within that distance of a rounding
boundary. In particular fp32 weights are used as fp32: never rounded to bf16 or tf32.

``silu_mul_quant_fp8`` is defined in float32, because that is the arithmetic the kernels do;
the exact fp32 expressions are given in its docstring. Its rounding points are: the fp32
SiLU-and-multiply, the fp32 scale, the fp32 division by the scale and the final round to
float8_e4m3fn (round to nearest even, after saturating to +-448).

``pack_topk`` rounds fp32 weights to bf16 (round to nearest even); everything else is bit
manipulation.
"""

import torch

from . import checks

__all__ = [
    "router_gemm",
    "norm_router_gemm",
    "silu_mul_quant_fp8",
    "dequantize_fp8",
    "pack_topk",
    "unpack_topk",
]

FP8_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_FLOOR = 1e-10  # keeps all-zero groups from dividing by zero

_BF16, _FP16, _FP32 = torch.bfloat16, torch.float16, torch.float32
_FLOATS = (_BF16, _FP16, _FP32)
_ANY_FLOAT = _FLOATS + (torch.float64,)
_INT_IDS = (torch.int32, torch.int64)


def _check(t, name, ndim, dtypes):
    checks.check_tensor(name, t, dtypes, (None,) * ndim)


def _require(ok, name, msg, exc=ValueError):
    checks.require(ok, f"{name}: {msg}", exc)


def router_gemm(x, weight, bias=None, out_dtype=torch.float32):
    """Router logits: ``x @ weight.T (+ bias)``.

    x [M, H] bf16/fp16/fp32, weight [E, H] bf16/fp16/fp32, bias [E] (any float dtype) or None.
    Returns [M, E] in ``out_dtype`` (fp32 or bf16): computed in float64 and rounded once.
    """
    _check(x, "x", 2, _FLOATS)
    _check(weight, "weight", 2, _FLOATS)
    _require(weight.shape[1] == x.shape[1], "weight",
             f"shape {tuple(weight.shape)} does not match x's hidden size {x.shape[1]}")
    if bias is not None:
        _check(bias, "bias", 1, _ANY_FLOAT)
        _require(bias.shape[0] == weight.shape[0], "bias",
                 f"length {bias.shape[0]} != number of experts {weight.shape[0]}")
    _require(out_dtype in (_FP32, _BF16), "out_dtype", f"{out_dtype} not supported", TypeError)
    acc = x.double() @ weight.double().T
    if bias is not None:
        acc = acc + bias.double()
    return acc.to(out_dtype)


def norm_router_gemm(x, norm_weight, gate_weight, eps=1e-6, out_dtype=torch.float32):
    """RMSNorm fused with the router GEMM. Returns ``(normed_x, logits)``.

    x [M, H] bf16/fp16, norm_weight [H] (any float dtype), gate_weight [E, H] bf16/fp32.
    In float64: ``r = 1 / sqrt(mean(x**2, over H) + eps)``, ``n = x * r * norm_weight``.
    ``normed_x = n`` rounded once to x.dtype; ``logits = n @ gate_weight.T`` rounded once to
    ``out_dtype``. The logits use the unrounded n: they do not see the rounding of normed_x.
    """
    _check(x, "x", 2, (_BF16, _FP16))
    _require(x.shape[1] > 0, "x", "hidden size must be > 0")
    _check(norm_weight, "norm_weight", 1, _ANY_FLOAT)
    _require(norm_weight.shape[0] == x.shape[1], "norm_weight",
             f"length {norm_weight.shape[0]} != x's hidden size {x.shape[1]}")
    _check(gate_weight, "gate_weight", 2, (_BF16, _FP32))
    _require(gate_weight.shape[1] == x.shape[1], "gate_weight",
             f"shape {tuple(gate_weight.shape)} does not match x's hidden size {x.shape[1]}")
    _require(float(eps) >= 0.0, "eps", f"must be >= 0, got {eps}")
    _require(out_dtype in (_FP32, _BF16), "out_dtype", f"{out_dtype} not supported", TypeError)
    xd = x.double()
    r = 1.0 / torch.sqrt(xd.square().mean(dim=1, keepdim=True) + float(eps))
    n = xd * r * norm_weight.double()
    return n.to(x.dtype), (n @ gate_weight.double().T).to(out_dtype)


def _pow2_f32(e):
    """Exactly 2**e as float32, built from its bits (e: int32 tensor; inf above 2**127)."""
    normal = (e + 127).clamp(1, 254) << 23
    subnormal = torch.ones_like(e) << (e + 149).clamp(0, 22)
    out = torch.where(e >= -126, normal, subnormal).view(torch.float32)
    return torch.where(e > 127, torch.full_like(out, float("inf")), out)


def _ceil_pow2(s):
    """Round positive finite fp32 values up to a power of two, exactly; others pass through.

    frexp gives s = m * 2**e with m in [0.5, 1): s is a power of two iff m == 0.5, and
    otherwise 2**(e-1) < s < 2**e. No float arithmetic is involved, so nothing can round.
    Values above 2**127 become inf (no finite power of two is large enough).
    """
    m, e = torch.frexp(s)
    up = torch.where(m == 0.5, s, _pow2_f32(e.to(torch.int32)))
    return torch.where(torch.isfinite(s) & (s > 0), up, s)


def silu_mul_quant_fp8(x, group_size=128, scale_ub=None, ue8m0=False, scale_layout="row"):
    """SiLU(gate) * up, quantised to float8_e4m3fn with one fp32 scale per group.

    x [T, 2H] bf16/fp16, laid out [gate | up]. In float32, elementwise:
        g, u = x[:, :H].float(), x[:, H:].float()
        y = (g / (1 + exp(-g))) * u          # silu(g) = g * sigmoid(g), written this way
    exp is torch's fp32 exp; kernels using a faster exp may differ from y by a few ulp.
    Per row and per group of ``group_size`` consecutive columns of y:
        amax  = max |y| over the group       # NaN anywhere in the group gives NaN
        scale = max(amax, 1e-10) / 448       # fp32; NaN stays NaN
        scale = min(scale, scale_ub)         # only if scale_ub (fp32 scalar tensor) is given
        scale = 2**ceil(log2(scale))         # only if ue8m0; exact (see _ceil_pow2)
        q     = clamp(y / scale, -448, 448).to(float8_e4m3fn)   # saturating; NaN stays NaN
    The division is a true fp32 division (not a multiply by 1 / scale).

    Returns ``(q [T, H] float8_e4m3fn, scales [T, H // group_size] fp32)``. scale_layout "row"
    gives row-major scales; "col" gives the same values with strides (1, T), i.e. a
    [H // group_size, T] row-major buffer seen transposed.
    """
    _check(x, "x", 2, (_BF16, _FP16))
    _require(group_size in (64, 128), "group_size", f"must be 64 or 128, got {group_size}")
    _require(x.shape[1] % 2 == 0, "x", f"width {x.shape[1]} must be even ([gate | up])")
    T, H = x.shape[0], x.shape[1] // 2
    _require(H % group_size == 0, "x", f"half-width H={H} must be a multiple of group_size={group_size}")
    _require(scale_layout in ("row", "col"), "scale_layout", f"must be 'row' or 'col', got {scale_layout!r}")
    if scale_ub is not None:
        ok = isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == _FP32 and scale_ub.numel() == 1
        _require(ok, "scale_ub", "must be a one-element float32 tensor", TypeError)

    g, u = x[:, :H].float(), x[:, H:].float()
    y = (g / (1.0 + torch.exp(-g))) * u
    G = H // group_size
    yg = y.view(T, G, group_size)
    amax = yg.abs().amax(dim=-1)
    # Make NaN propagation explicit rather than relying on amax's behaviour.
    amax = torch.where(yg.isnan().any(dim=-1), torch.full_like(amax, float("nan")), amax)
    scale = torch.maximum(amax, torch.tensor(SCALE_FLOOR, dtype=_FP32, device=x.device)) / FP8_MAX
    if scale_ub is not None:
        scale = torch.minimum(scale, scale_ub.reshape(()).to(x.device))
    if ue8m0:
        scale = _ceil_pow2(scale)
    q = torch.clamp(yg / scale.unsqueeze(-1), -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)

    if scale_layout == "row":
        scales = scale.contiguous()
    else:
        # empty_strided pins strides (1, T) even when T <= 1, where a transpose would not.
        scales = torch.empty_strided((T, G), (1, T), dtype=_FP32, device=x.device)
        scales.copy_(scale)
    return q.view(T, H), scales


def dequantize_fp8(q, scales, group_size):
    """Inverse of the quantisation: ``q * scale`` per group, as float32 [T, H]."""
    _check(q, "q", 2, (torch.float8_e4m3fn,))
    _check(scales, "scales", 2, (_FP32,))
    _require(group_size > 0 and q.shape[1] % group_size == 0, "group_size",
             f"{group_size} does not divide q's width {q.shape[1]}")
    T, H = q.shape
    _require(tuple(scales.shape) == (T, H // group_size), "scales",
             f"shape {tuple(scales.shape)} != {(T, H // group_size)}")
    return (q.float().view(T, H // group_size, group_size) * scales.unsqueeze(-1)).view(T, H)


def pack_topk(ids, weights):
    """Pack top-k ids and weights into one int32: ``(id << 16) | bits(bf16(weight))``.

    ids [T, k] int32/int64, weights [T, k] fp32/bf16. The weight is rounded to bf16 (round to
    nearest even) and its 16 bits are zero-extended. The id is converted to int32 and shifted
    in int32 with two's complement wrap-around, so only its low 16 bits survive: ids must be
    < 65536 to unpack, and < 32768 for the packed value to be non-negative.
    """
    _check(ids, "ids", 2, _INT_IDS)
    _check(weights, "weights", 2, (_FP32, _BF16))
    _require(weights.shape == ids.shape, "weights",
             f"shape {tuple(weights.shape)} != ids shape {tuple(ids.shape)}")
    # torch shifts signed ints as their unsigned bit pattern, so the int32 shift wraps.
    w_bits = weights.to(_BF16).view(torch.int16).to(torch.int32) & 0xFFFF
    return (ids.to(torch.int32) << 16) | w_bits


def unpack_topk(packed):
    """Inverse of pack_topk: ``(ids int32 in [0, 65536), weights bf16)``."""
    _check(packed, "packed", 2, (torch.int32,))
    ids = (packed >> 16) & 0xFFFF
    lo = packed & 0xFFFF
    lo = torch.where(lo >= 2**15, lo - 2**16, lo)  # reinterpret as int16 without overflow
    return ids, lo.to(torch.int16).view(_BF16)


# ---------------------------------------------------------------- routing: scores and top-k

from .routing import RoutingConfig  # noqa: E402  (plain Python, no torch)

__all__ += ["route", "router_topk", "norm_router_topk"]


def _rank(values):
    """Indices ordering the last dim of ``values`` best first: larger values first, NaN below
    every number (-inf included), equal values (and NaNs among themselves) by lower index;
    -0.0 equals +0.0. Two stable ascending sorts, so nothing rests on torch.topk's tie order."""
    nan = values.isnan()
    key = torch.where(nan, torch.full_like(values, float("-inf")), values)
    order = torch.sort(-key, dim=-1, stable=True).indices
    nan_last = torch.sort(nan.gather(-1, order).to(torch.uint8), dim=-1, stable=True).indices
    return order.gather(-1, nan_last)


def _softmax_rows(v):
    """exp(v - max(v)) / sum(exp(v - max(v))) over the last dim, in fp32."""
    e = torch.exp(v - v.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _check_routing(routing):
    _require(isinstance(routing, RoutingConfig), "routing",
             f"expected a RoutingConfig, got {type(routing).__name__}", TypeError)


def route(logits, routing, correction_bias=None):
    """Top-k routing of router logits: ``(weights fp32 [M, k], ids int32 [M, k])``, k = top_k.

    logits [M, E] fp32; ``routing`` a RoutingConfig valid for E experts (``routing.check(E)``);
    ``correction_bias`` fp32 [E], given exactly when ``routing.correction_bias``. Rows are
    independent. In fp32, each torch op rounding once, per row l = logits[m]:

    1. Scores s [E]:
         softmax        s = exp(l - max(l)) / sum(exp(l - max(l)))   max subtracted: huge and
                                                                     tiny logits are stable
         sigmoid        s = sigmoid(l) = 1 / (1 + exp(-l))           (torch.sigmoid)
         sqrt_softplus  s = sqrt(max(l, 0) + log1p(exp(-|l|)))       a softplus that cannot overflow
         topk_softmax, topk_sigmoid   s = l                          the logits choose (see 6)
    2. Choice values c = s + correction_bias (one fp32 add), else c = s. The bias only chooses.
    3. Order: every ranking below puts larger values first; NaN ranks below every number, -inf
       included; equal values, and NaNs among themselves, go by lower index (of the expert, or
       of the group); -0.0 equals +0.0. It is a total order: the result is fully determined.
    4. Groups, when n_group = G > 1: experts g*S .. g*S+S-1 (S = E / G) form group g, whose
       score is the fp32 sum of its two best c (NaN when either is). The topk_group best groups
       are kept and only their experts can be chosen: the others are never chosen, whatever
       their values (selection runs over the kept experts; nothing is masked by a fill value).
    5. ids = the k best experts by c among those allowed (all E when G = 1), best first.
    6. Weights w [k]: s[ids], the unbiased scores; for topk_softmax the softmax of step 1 (max
       subtracted) over the k chosen logits l[ids]; for topk_sigmoid sigmoid(l[ids]).
       renormalize: w = w / sum(w). Last, always: w = w * scaling (scaling rounded to fp32;
       exact for 1.0).
    7. A row with a NaN logit gets NaN for all k weights. Its ids still follow 3-5: for
       softmax every score is NaN, so they are 0, 1, .., k-1 (all groups tie, groups 0 ..
       topk_group-1 are kept and hold experts 0 .. topk_group*S-1, at least k); for the other
       scorings only the NaN logits' experts have NaN choice values, and they are chosen, in
       index order, only when fewer than k allowed experts have numbers. An expert with a NaN
       correction bias likewise ranks last in every row (its weights never see the bias).

    Other special values follow the formulas: softmax of a row holding +inf, or of a row of
    only -inf, is NaN everywhere (inf - inf), so that row too gets ids 0 .. k-1 and NaN
    weights; otherwise a -inf logit scores 0 and +inf scores 1 (sigmoid) or inf
    (sqrt_softplus). renormalize divides as written: a zero sum gives NaN (0 / 0), an inf sum
    NaN for the inf weights and 0 for the others. Whatever the input, ids are k distinct
    experts in [0, E).

    Rounding: the two sums (softmax's over E, renormalize's over k) are fp32 in unspecified
    order, and exp / sigmoid / log1p are torch's: another implementation may differ by a few
    ulps (a sum of n positive terms by at most (n - 1) * 2**-24 relative). Its ids can differ
    only where two choice values lie within those ulps of each other; values that are equal
    (equal logits, or scores rounding to the same fp32, e.g. sigmoid(17) == sigmoid(30) == 1)
    tie and go by index, always.

    The packed form of the result is ``pack_topk(ids, weights)`` (needs E < 32768).
    """
    _check(logits, "logits", 2, (_FP32,))
    _check_routing(routing)
    M, E = logits.shape
    routing.check(E)
    if routing.correction_bias:
        _require(correction_bias is not None, "correction_bias", "required: routing.correction_bias is True")
        _check(correction_bias, "correction_bias", 1, (_FP32,))
        _require(correction_bias.shape[0] == E, "correction_bias",
                 f"length {correction_bias.shape[0]} != number of experts {E}")
    else:
        _require(correction_bias is None, "correction_bias", "given, but routing.correction_bias is False")
    k, scoring = routing.top_k, routing.scoring

    if scoring == "softmax":
        scores = _softmax_rows(logits)
    elif scoring == "sigmoid":
        scores = torch.sigmoid(logits)
    elif scoring == "sqrt_softplus":
        scores = torch.sqrt(logits.clamp_min(0.0) + torch.log1p(torch.exp(-logits.abs())))
    else:  # topk_softmax, topk_sigmoid
        scores = logits
    choice = scores if correction_bias is None else scores + correction_bias

    if routing.n_group > 1:
        G = routing.n_group
        S = E // G
        grouped = choice.reshape(M, G, S)
        top2 = grouped.gather(2, _rank(grouped)[..., :2])
        group_scores = top2[..., 0] + top2[..., 1]
        kept = _rank(group_scores)[:, :routing.topk_group].sort(dim=1).values  # ascending groups
        allowed = (kept.unsqueeze(2) * S + torch.arange(S, device=logits.device)).reshape(M, routing.topk_group * S)
        ids = allowed.gather(1, _rank(choice.gather(1, allowed))[:, :k])
    else:
        ids = _rank(choice)[:, :k]

    if scoring == "topk_softmax":
        weights = _softmax_rows(logits.gather(1, ids))
    elif scoring == "topk_sigmoid":
        weights = torch.sigmoid(logits.gather(1, ids))
    else:
        weights = scores.gather(1, ids)
    if routing.renormalize:
        weights = weights / weights.sum(dim=1, keepdim=True)
    weights = weights * torch.tensor(routing.scaling, dtype=_FP32, device=logits.device)
    nan_rows = logits.isnan().any(dim=1, keepdim=True)
    weights = torch.where(nan_rows, torch.full_like(weights, float("nan")), weights)
    return weights.contiguous(), ids.to(torch.int32).contiguous()


def router_topk(x, weight, bias=None, *, routing, correction_bias=None):
    """The router GEMM fused with scoring and top-k: ``(weights fp32 [M, k], ids int32 [M, k])``.

    Exactly ``route(router_gemm(x, weight, bias, out_dtype=torch.float32), routing,
    correction_bias)``: the logits are computed in float64 and rounded once to fp32 (see
    ``router_gemm``), then routed. ``bias`` is the gate's own bias, part of the logits
    (gpt-oss); ``correction_bias`` only chooses (see ``route``). Packed: ``pack_topk(ids, weights)``.
    """
    _check_routing(routing)
    return route(router_gemm(x, weight, bias, out_dtype=_FP32), routing, correction_bias)


def norm_router_topk(x, norm_weight, gate_weight, eps=1e-6, *, routing, correction_bias=None):
    """RMSNorm, router GEMM, scoring and top-k fused: ``(normed_x, weights fp32 [M, k], ids int32 [M, k])``.

    ``normed_x, logits = norm_router_gemm(x, norm_weight, gate_weight, eps,
    out_dtype=torch.float32)`` (normed_x rounded once to x.dtype; the fp32 logits rounded once
    from the unrounded float64 product), then ``weights, ids = route(logits, routing,
    correction_bias)``. Packed: ``pack_topk(ids, weights)``.
    """
    _check_routing(routing)
    normed, logits = norm_router_gemm(x, norm_weight, gate_weight, eps, out_dtype=_FP32)
    weights, ids = route(logits, routing, correction_bias)
    return normed, weights, ids
