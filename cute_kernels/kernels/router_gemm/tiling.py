"""How the router GEMM and the fused norm-router are tiled, and what they take: the
specialisation each call gets (``pick``, ``pick_norm``), the limits stated once (``supports``,
``supports_norm``, ``max_rows``), and the configurations presets and CI compile.

Every rule here was measured on the H100; the figures are in perf/NOTES.md (rounds named in
the comments). Plain Python: no DSL, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass

from ..common import FLOATS, H100_SMS, MAX_ELEMENTS, WIDTHS
from ...routing import RoutingConfig
from .config import MAX_EXPERTS, MAX_GROUPS, MMA_DTYPES, MMA_K, NormRouterGemm, NormRouterTopk, Route, RouterGemm, \
    RouterTopk

OUT_DTYPES = ("float32", "bfloat16")
NORM_X_DTYPES = ("bfloat16", "float16")
NORM_GATE_DTYPES = ("bfloat16", "float32")
SMEM_BUDGET = 200 * 1024  # bytes per CTA; H100 allows 227 KB
MAX_H = 65536  # the largest H compiled and tested (the dot kernel splits it 8 ways)
NORM_MAX_H = 131072  # the fused kernel keeps its x tiles in shared memory; this much always fits
DOT_WARPS = 8  # consumer warps of the dot variant
DOT_MAX_ACC = 64  # fp32 accumulators per lane in the dot variant: m_tile * e_tile
# CTAs per SM the plain router's dot grid aims for with one token tile: fewer, fuller CTAs won
# at small E (third round); with several token tiles one CTA per SM stays ahead.
DOT_CTAS_PER_SM = 0.73
# The tensor-core variant holds a CTA's share of H in shared memory; at its smallest tiling (16
# experts, 8 tokens, 8-way split) that fits up to H = 33792 with 16-bit weights, 19456 with fp32
# ones (``mma_max_h``).
MMA_MAX_H = 32768  # 16-bit weights; half of it for fp32 weights
DOT_MAX_M = 4  # above this M, calls the tensor cores take default to the mma variant
# Consumer warps of the tensor-core variant, in order of preference. A stage row holds 32 columns
# per warp; with an odd count it is an odd multiple of 64 bytes, so the two rows one quarter-warp's
# 16-byte fragment loads touch fall on disjoint shared-memory banks (with 4 warps every load was a
# 2-way conflict). The most warps that still leave each warp MMA_MIN_STEPS k tiles of the CTA's
# share won (eighth round).
MMA_WARPS = (7, 5, 3)
MMA_MIN_STEPS = 3
# The fused kernel's dot variant up to this M: the tensor-core one costs as much at M = 1 as at 8
# (sixth round).
NORM_DOT_MAX_M = 2


@dataclass(frozen=True)
class Problem:
    """A router GEMM call without M: dtype names (``bias_dtype`` None without a bias) and sizes."""

    x_dtype: str
    w_dtype: str
    bias_dtype: str | None
    out_dtype: str
    hidden: int
    experts: int


@dataclass(frozen=True)
class NormProblem:
    """A fused RMSNorm + router call without M."""

    x_dtype: str
    norm_dtype: str
    w_dtype: str
    out_dtype: str
    hidden: int
    experts: int


def _sizes(h: int, e: int, weight: str) -> str | None:
    if h <= 0 or h % 8:
        return f"x's hidden size H={h} must be a positive multiple of 8"
    if e < 1:
        return f"{weight} must have at least one expert row (E >= 1)"
    if e * h > MAX_ELEMENTS:
        return f"{weight} has {e * h} elements; at most {MAX_ELEMENTS} are supported"
    return None


def supports(p: Problem, variant: str | None = None) -> str | None:
    """Why the router kernel (``variant``: "dot", "mma", or None for the default pick) cannot
    take ``p``; None when it can. M is bounded by ``max_rows``."""
    if p.x_dtype not in FLOATS or p.w_dtype not in FLOATS:
        return f"x and weight must be bfloat16, float16 or float32; got {p.x_dtype} and {p.w_dtype}"
    if p.bias_dtype is not None and p.bias_dtype not in FLOATS:
        return f"bias must be bfloat16, float16 or float32; got {p.bias_dtype}"
    if p.out_dtype not in OUT_DTYPES:
        return f"out_dtype must be float32 or bfloat16; got {p.out_dtype}"
    if variant == "mma" and not mma_dtypes(p.x_dtype, p.w_dtype):
        return (f"variant='mma' (tensor cores) needs x and weight both bfloat16 or both float16, or bfloat16 x "
                f"with float32 weights; got {p.x_dtype} and {p.w_dtype}")
    if why := _sizes(p.hidden, p.experts, "weight"):
        return why
    if p.hidden > MAX_H:
        return f"H={p.hidden} is over {MAX_H}"
    if variant == "mma":
        if p.hidden > mma_max_h(p.w_dtype):
            return (f"variant='mma' takes H up to {mma_max_h(p.w_dtype)} with {p.w_dtype} weights (a CTA's "
                    f"share of H must fit in shared memory); got H={p.hidden}")
    elif variant not in (None, "dot"):
        return f"variant must be 'dot', 'mma' or None; got {variant!r}"
    return None


def supports_norm(p: NormProblem) -> str | None:
    """Why the fused RMSNorm + router kernel cannot take ``p``; None when it can."""
    if p.x_dtype not in NORM_X_DTYPES:
        return f"x must be bfloat16 or float16; got {p.x_dtype}"
    if p.norm_dtype not in FLOATS:
        return f"norm_weight must be bfloat16, float16 or float32; got {p.norm_dtype}"
    if p.w_dtype not in NORM_GATE_DTYPES:
        return f"gate_weight must be bfloat16 or float32; got {p.w_dtype}"
    if p.out_dtype not in OUT_DTYPES:
        return f"out_dtype must be float32 or bfloat16; got {p.out_dtype}"
    if why := _sizes(p.hidden, p.experts, "gate_weight"):
        return why
    if p.hidden > NORM_MAX_H:
        return f"H={p.hidden} is over {NORM_MAX_H}: a CTA's share of x would not fit in shared memory"
    return None


def max_rows(hidden: int, experts: int) -> int:
    """The largest M: the kernels index x and the logits with 32-bit integers."""
    return MAX_ELEMENTS // max(hidden, experts, 1)


def variant_for(x_dtype: str, w_dtype: str, m: int, h: int) -> str:
    """Default consumer: tensor cores once a few tokens share each weight (``mma_dtypes``, H up
    to ``mma_max_h``)."""
    if mma_dtypes(x_dtype, w_dtype) and m > DOT_MAX_M and h <= mma_max_h(w_dtype):
        return "mma"
    return "dot"


def mma_dtypes(x_dtype: str, w_dtype: str) -> bool:
    """Whether the tensor-core variant takes these dtypes: both bf16, both fp16, or bf16 x with
    fp32 weights (fed as three exact bf16 parts)."""
    return (x_dtype, w_dtype) in MMA_DTYPES


def mma_max_h(w_dtype: str) -> int:
    """The largest H the tensor-core variant takes with these weights."""
    return MMA_MAX_H * 16 // WIDTHS[w_dtype]


def m_tile_for(variant: str, m: int) -> int:
    """Token tile: a power of two covering M, from a small fixed set (bounded compiles)."""
    lo, hi = (8, 64) if variant == "mma" else (1, 8)
    tile = lo
    while tile < min(m, hi):
        tile *= 2
    return tile


@functools.lru_cache(maxsize=4096)
def pick(x_dtype: str, w_dtype: str, out_dtype: str, bias_dtype: str | None, m: int, h: int, e: int,
         variant: str, pdl: bool, num_sms: int = H100_SMS, reserve: int = 0) -> RouterGemm:
    """The specialisation for a call. Tiles come from M's bucket.

    ``dot``: no split where a CTA's share of H fits (a 2-way cluster split measured slower at
    M = 1); the expert tile spreads the experts (times the token tiles) over about
    DOT_CTAS_PER_SM CTAs per SM (one per SM with several token tiles), at least 2 experts per
    CTA, at most 64 accumulators per lane. Eight consumer warps take the CTA's k tiles in turn
    (fewer when it has fewer tiles).
    ``mma``: H split 8 ways across a cluster; 32-expert tiles of M's token bucket up to 16
    tokens, 32 x 16-token tiles up to 64, then 32-token tiles of 16 experts (32 below 256
    experts): each the best, or close to it, of 28 tilings and reductions measured. With
    fp32 weights (three MMAs per weight) 16-expert tiles of 8, 16, 16 and 32 tokens up to
    M = 8, 16, 32 and beyond. Consumer warps: ``mma_warps``.
    Both hold a CTA's whole share of H in shared memory (``stages_for``); where it does not fit,
    fewer tokens share a CTA, then (dot) fewer experts, then H is split (further). Splits reduce
    across a cluster: through the global workspace (``RouterGemm.reduce``, an explicit config)
    the same splits measured slower up to M = 16, level at M = 128. ``reserve``: shared-memory
    bytes to leave for what a fused epilogue adds (the selection's)."""
    m_tile = m_tile_for(variant, m)

    def make(e_tile, tile, split_k, warps=4):
        return RouterGemm(x_dtype, w_dtype, out_dtype, bias_dtype, variant, e_tile, tile, split_k, 1, pdl, warps)

    if variant == "dot":
        # Every stage must fit: where the share does not, fewer tokens per CTA, then fewer
        # experts, then a split.
        for split_k in (1, 2, 4, 8):
            for tile in (t for t in (8, 4, 2, 1) if t <= m_tile):
                m_tiles = -(-m // tile)
                e_tile = dot_e_tile(e, tile, m_tiles, (DOT_CTAS_PER_SM if m_tiles == 1 else 1) * num_sms)
                for et in dict.fromkeys((e_tile, *(t for t in (8, 4, 2, 1) if t < e_tile))):
                    probe = make(et, tile, split_k)
                    if split_k > 1 and split_k > -(-h // probe.k_tile):
                        continue
                    probe = dataclasses.replace(probe, consumer_warps=min(DOT_WARPS, probe.k_tiles_per_cta(h)))
                    if stages := stages_for(probe, h, reserve):
                        return dataclasses.replace(probe, stages=stages)
        raise ValueError(f"hidden size H={h} is too large for the router kernel's shared memory")
    if w_dtype == "float32":  # 16-expert tiles first at every M (MiniMax-M2/M3)
        tiles = [(16, m_tile if m <= 16 else 16 if m <= 32 else 32)]
    elif m <= 16:
        tiles = [(32, m_tile), (16, m_tile)]
    elif m <= 64:
        tiles = [(32, 16), (16, 16)]
    else:
        tiles = [(16 if e >= 256 else 32, 32), (16, 16)]
    # 16 x 8 tiles with 4 warps hold any H up to mma_max_h.
    for e_tile, tile in dict.fromkeys(tiles + [(16, 8)]):
        for warps in mma_warps(h, w_dtype):
            probe = make(e_tile, tile, 1, warps)
            probe = dataclasses.replace(probe, split_k=min(8, -(-h // probe.k_tile)))  # >= 1 k tile per CTA
            if stages := stages_for(probe, h, reserve):
                return dataclasses.replace(probe, stages=stages)
    raise ValueError(f"hidden size H={h} is too large for the router kernel's shared memory")


def mma_warps(h: int, w_dtype: str) -> list[int]:
    """Consumer-warp counts for the tensor-core variant, best first. 16-bit weights: of
    ``MMA_WARPS``, those that leave every CTA of the 8-way split at least ``MMA_MIN_STEPS`` k
    tiles, most warps first, then the rest, most k tiles first; 4 last (the count whose smallest
    tiling fits every H up to ``mma_max_h``). fp32 weights: 4 only (a warp's weight columns are
    128 bytes per row at any count, so their loads conflict anyway, and odd counts measured
    slower)."""
    if WIDTHS[w_dtype] == 32:
        return [4]

    def k_tiles(warps):
        n_k = -(-h // (MMA_K * warps))
        return n_k // min(8, n_k)  # the smallest CTA's share

    enough = [w for w in MMA_WARPS if k_tiles(w) >= MMA_MIN_STEPS]
    return enough + [w for w in reversed(MMA_WARPS) if w not in enough] + [4]


def dot_e_tile(e: int, m_tile: int, m_tiles: int, ctas: float) -> int:
    """Experts per dot CTA: about ``ctas`` CTAs over the expert and token tiles, at least 2, at
    most E, 16 (a share of large H still fits in shared memory) and DOT_MAX_ACC / m_tile
    (accumulators per lane)."""
    return max(1, min(e, 16, max(2, math.ceil(e * m_tiles / ctas)), DOT_MAX_ACC // m_tile))


def stages_for(config: RouterGemm, h: int, reserve: int = 0) -> int:
    """Stages for a CTA's whole share of H (the kernel never reuses a stage), or 0 when they do
    not fit in the shared-memory budget (less ``reserve``)."""
    share = config.k_tiles_per_cta(h)
    return share if dataclasses.replace(config, stages=share).smem_bytes() <= SMEM_BUDGET - reserve else 0


@functools.lru_cache(maxsize=4096)
def pick_norm(x_dtype: str, norm_dtype: str, w_dtype: str, out_dtype: str, m: int, h: int, e: int, pdl: bool,
              num_sms: int = H100_SMS, reserve: int = 0) -> NormRouterGemm:
    """Tensor cores (the router's mma tiling) above NORM_DOT_MAX_M tokens when x, the norm
    weight and the gate are all bf16; otherwise the dot variant with the router's expert tile
    and no cluster (2- and 4-CTA clusters measured slower at M = 1, although each CTA then reads
    all of x and the norm weight). Each CTA keeps all of its x and norm-weight tiles resident;
    where they do not fit, H is split across a cluster (2, 4, then 8 ways), then fewer tokens
    share a CTA. ValueError if even one token's share of H cannot stay resident."""
    mma = x_dtype == norm_dtype == w_dtype == "bfloat16" and m > NORM_DOT_MAX_M and h <= MMA_MAX_H
    for variant in ("mma", "dot") if mma else ("dot",):
        m_tile = m_tile_for(variant, m)
        tiles = [t for t in (64, 32, 16, 8, 4, 2, 1) if t <= m_tile and (variant == "dot" or t >= 8)]
        for tile in tiles:
            m_tiles = -(-m // tile)
            for split_cap in (1, 2, 4, 8) if variant == "dot" else (None, 8):
                if variant == "mma":
                    base = pick(x_dtype, w_dtype, out_dtype, None, m, h, e, "mma", pdl, num_sms, reserve)
                    e_tile, warps = base.e_tile, fused_mma_warps(base.consumer_warps)
                    split_cap = split_cap or base.split_k
                else:
                    e_tile, warps = dot_e_tile(e, tile, m_tiles, num_sms), DOT_WARPS
                probe = NormRouterGemm(x_dtype, w_dtype, out_dtype, None, variant, e_tile, tile, 1, 1, pdl,
                                       warps, norm_dtype=norm_dtype)
                split_k = max(s for s in (1, 2, 4, 8) if s <= min(-(-h // probe.k_tile), split_cap))
                probe = dataclasses.replace(probe, split_k=split_k)
                if variant == "dot":
                    probe = dataclasses.replace(probe, consumer_warps=min(warps, probe.k_tiles_per_cta(h)))
                if stages := stages_for(probe, h, reserve):
                    return dataclasses.replace(probe, stages=stages)
    raise ValueError(f"hidden size H={h} is too large for the fused kernel: a CTA's share of x does not fit "
                     "in shared memory (use the router GEMM on normed rows)")


def fused_mma_warps(router_warps: int) -> int:
    """Consumer warps of the fused kernel's tensor-core variant, given the router's pick for the
    same shape: 7 where the router takes 7, else 4 (eighth round: 7 won on DeepSeek-V4-Pro, 4
    beat the router's 5 on DeepSeek-V4-Flash)."""
    return router_warps if router_warps == max(MMA_WARPS) else 4


# -- top-k selection ----------------------------------------------------------------------------
def supports_selection(routing: RoutingConfig, experts: int) -> str | None:
    """Why the fused selection cannot take ``routing`` over ``experts``; None when it can."""
    try:
        routing.check(experts)
    except ValueError as e:
        return str(e)
    if experts > MAX_EXPERTS:
        return f"the fused selection takes up to {MAX_EXPERTS} experts; got E={experts}"
    if routing.n_group > MAX_GROUPS:
        return f"the fused selection takes up to {MAX_GROUPS} groups; got n_group={routing.n_group}"
    return None


def _selection(routing: RoutingConfig, experts: int, packed: bool) -> dict:
    return dict(experts=experts, scoring=routing.scoring, top_k=routing.top_k, n_group=routing.n_group,
                topk_group=routing.topk_group, renormalize=routing.renormalize,
                correction_bias=routing.correction_bias, packed=packed)


def _selection_bytes(routing: RoutingConfig, experts: int) -> int:
    """What the selection adds to a CTA's shared memory, alignment included (``select_plan``,
    the arrival flag)."""
    return 16 + 4 * experts * routing.correction_bias + 16


def _with_selection(cls, base, routing, experts, packed):
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    config = cls(**fields, **_selection(routing, experts, packed))
    assert config.smem_bytes() <= SMEM_BUDGET, config  # the base pick left room for it
    return config


@functools.lru_cache(maxsize=4096)
def pick_topk(x_dtype: str, w_dtype: str, bias_dtype: str | None, m: int, h: int, e: int, routing: RoutingConfig,
              packed: bool, pdl: bool, num_sms: int = H100_SMS) -> RouterTopk:
    """The router GEMM's own tiling for the call (fp32 logits), with the selection after it."""
    base = pick(x_dtype, w_dtype, "float32", bias_dtype, m, h, e, variant_for(x_dtype, w_dtype, m, h), pdl, num_sms,
                _selection_bytes(routing, e))
    return _with_selection(RouterTopk, base, routing, e, packed)


@functools.lru_cache(maxsize=4096)
def pick_norm_topk(x_dtype: str, norm_dtype: str, w_dtype: str, m: int, h: int, e: int, routing: RoutingConfig,
                   packed: bool, pdl: bool, num_sms: int = H100_SMS) -> NormRouterTopk:
    """The fused norm-router's own tiling for the call (fp32 logits), with the selection after it."""
    base = pick_norm(x_dtype, norm_dtype, w_dtype, "float32", m, h, e, pdl, num_sms, _selection_bytes(routing, e))
    return _with_selection(NormRouterTopk, base, routing, e, packed)


@functools.lru_cache(maxsize=1024)
def pick_route(e: int, routing: RoutingConfig, packed: bool, pdl: bool) -> Route:
    """The selection alone: 4 warps (tokens) per CTA."""
    return Route(**_selection(routing, e, packed), pdl=pdl)


# -- what presets and CI compile ----------------------------------------------------------------
ROUTER_M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # one per M bucket of either variant
NORM_M_VALUES = (1, 2, 4, 8, 16, 32, 64)  # the fused kernel's M buckets (dot to 2, then mma)


def preset_configs(preset, pdl: bool = True, num_sms: int = H100_SMS, x_dtype: str = "bfloat16") -> list:
    """The router (and, for presets that fuse it, norm-router) specialisations a preset's calls
    at the bucket M values use, for a GPU of ``num_sms`` SMs (bf16 activations)."""
    bias = preset.gate_dtype if preset.gate_bias else None
    h, e = preset.hidden_size, preset.num_experts
    configs = {pick(x_dtype, preset.gate_dtype, preset.logits_dtype, bias, m, h, e,
                    variant_for(x_dtype, preset.gate_dtype, m, h), pdl, num_sms) for m in ROUTER_M_VALUES}
    configs |= {pick_topk(x_dtype, preset.gate_dtype, bias, m, h, e, preset.routing, False, pdl, num_sms)
                for m in ROUTER_M_VALUES}
    configs.add(pick_route(e, preset.routing, False, pdl))
    if preset.norm_router:
        configs |= {pick_norm("bfloat16", "bfloat16", preset.gate_dtype, preset.logits_dtype, m, h, e, pdl, num_sms)
                    for m in NORM_M_VALUES}
        configs |= {pick_norm_topk("bfloat16", "bfloat16", preset.gate_dtype, m, h, e, preset.routing, False, pdl,
                                   num_sms) for m in NORM_M_VALUES}
    return sorted(configs, key=repr)


# (x, weight, out, bias, M, H, E, variant, pdl): every dtype pair, both outputs, bias in three
# dtypes, both variants, no split, a split across a cluster (every mma, dot where a share of H
# does not fit), M buckets, PDL off. The two mma ones at M = 16 and 128 also go through the global
# workspace, which no default picks.
VARIANTS = (
    [(x, w, "float32", None, 1, 7168, 256, "dot", True) for x in FLOATS for w in FLOATS]
    + [("bfloat16", "bfloat16", "bfloat16", "bfloat16", 3, 2880, 128, "dot", True),
       ("bfloat16", "float32", "float32", "float32", 8, 3072, 256, "dot", True),
       ("float32", "float32", "bfloat16", "float16", 33, 64, 1, "dot", True),
       ("bfloat16", "bfloat16", "float32", None, 1, 7168, 256, "dot", False),
       ("bfloat16", "bfloat16", "float32", None, 8, 65536, 256, "dot", True),
       ("bfloat16", "bfloat16", "float32", None, 16, 7168, 256, "mma", True),
       ("bfloat16", "bfloat16", "float32", None, 128, 7168, 256, "mma", True),
       ("float16", "float16", "float32", None, 8, 4096, 128, "mma", True),
       ("bfloat16", "bfloat16", "bfloat16", "bfloat16", 64, 2880, 128, "mma", True),
       ("bfloat16", "bfloat16", "float32", "float32", 256, 64, 1000, "mma", False),
       ("bfloat16", "float32", "float32", None, 32, 3072, 256, "mma", True),
       ("bfloat16", "float32", "bfloat16", "float32", 128, 6144, 128, "mma", False)]
)
GLOBAL_REDUCE = [v for v in VARIANTS if v[7] == "mma" and v[4] in (16, 128) and v[5] == 7168]

# (x, norm, gate, out, M, H, E, pdl): each dtype of each operand, both variants (bf16 above M = 2
# takes tensor cores), cluster split on and off (large H), M buckets.
NORM_VARIANTS = (
    ("bfloat16", "bfloat16", "bfloat16", "float32", 1, 7168, 384, True),
    ("bfloat16", "bfloat16", "bfloat16", "float32", 16, 4096, 256, True),
    ("bfloat16", "bfloat16", "bfloat16", "bfloat16", 64, 7168, 384, False),
    ("float16", "float32", "float32", "bfloat16", 3, 3072, 256, True),
    ("bfloat16", "float16", "bfloat16", "bfloat16", 8, 64, 1, False),
    ("bfloat16", "bfloat16", "float32", "float32", 2, 32768, 64, True),
)


# (x, weight, bias, M, H, E, routing, packed, pdl): every scoring, groups, a correction bias,
# renormalize, top_k 1 and 32, E = top_k and E not a multiple of 32, both variants and a split of
# H across a cluster (large H), packed output, PDL off.
TOPK_VARIANTS = (
    ("bfloat16", "bfloat16", None, 1, 7168, 256, RoutingConfig("sigmoid", 8, 8, 4, True, 2.5, True), False, True),
    ("bfloat16", "bfloat16", None, 16, 7168, 256, RoutingConfig("sigmoid", 8, 8, 4, True, 2.5, True), True, True),
    ("bfloat16", "bfloat16", None, 64, 7168, 384, RoutingConfig("sigmoid", 8, 1, 1, True, 2.8, True), False, False),
    ("bfloat16", "bfloat16", None, 8, 4096, 128, RoutingConfig("softmax", 8, renormalize=True), False, True),
    ("bfloat16", "bfloat16", "bfloat16", 3, 2880, 128, RoutingConfig("topk_softmax", 4), False, True),
    ("bfloat16", "bfloat16", None, 2, 5120, 128, RoutingConfig("topk_sigmoid", 1), False, True),
    ("bfloat16", "float32", None, 32, 3072, 256, RoutingConfig("sigmoid", 8, renormalize=True, correction_bias=True),
     False, True),
    ("bfloat16", "bfloat16", None, 1, 7168, 896, RoutingConfig("sigmoid", 16, renormalize=True, correction_bias=True),
     True, True),
    ("float32", "float32", None, 5, 64, 33, RoutingConfig("softmax", 32), False, True),
    ("bfloat16", "bfloat16", None, 1, 64, 1, RoutingConfig("sigmoid", 1), False, True),
    ("bfloat16", "bfloat16", None, 128, 65536, 40, RoutingConfig("sqrt_softplus", 6, 4, 2, True, 1.5, True), False,
     True),
)
# (x, norm, gate, M, H, E, routing, packed, pdl): the DeepSeek-V4 routing on both variants.
NORM_TOPK_VARIANTS = (
    ("bfloat16", "bfloat16", "bfloat16", 1, 7168, 384, RoutingConfig("sqrt_softplus", 6, 1, 1, True, 2.5, True),
     False, True),
    ("bfloat16", "bfloat16", "bfloat16", 16, 4096, 256, RoutingConfig("sqrt_softplus", 6, 1, 1, True, 1.5, True),
     True, True),
)


def variants() -> list:
    """Every code path of the family's kernels: each dtype pair, variant, reduction, selection
    and PDL setting."""
    configs = {pick(*v) for v in VARIANTS}
    configs |= {dataclasses.replace(pick(*v), reduce="global") for v in GLOBAL_REDUCE}
    configs |= {pick_norm(*v) for v in NORM_VARIANTS}
    configs |= {pick_topk(*v) for v in TOPK_VARIANTS}
    configs |= {pick_norm_topk(*v) for v in NORM_TOPK_VARIANTS}
    configs |= {pick_route(e, routing, packed, pdl) for _, _, _, _, _, e, routing, packed, pdl in TOPK_VARIANTS}
    return sorted(configs, key=repr)
