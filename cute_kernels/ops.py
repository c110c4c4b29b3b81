"""Public ops: validate through the bridge, then launch through the problem's ``*_launcher``.

A launcher (one per problem: dtypes, sizes but M, device) checks only the outputs, keeps each
specialisation's compiled function and launches; the dispatcher's CuTe tiers call it directly,
their cached plan already holding everything else an op checks."""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from . import bridge
from .kernels.common import WIDTHS
from .kernels.router_gemm import MMA_DTYPES, MMA_K, NormRouterGemm, RouterGemm
from .kernels.silu_mul_quant import SiluMulQuantFp8
from .kernels.topk_pack import TopkPack

_MAX_ELEMENTS = 2**31 - 1  # kernels index with 32-bit integers


def _pow2_dividing(n: int, cap: int) -> int:
    v = cap
    while n % v:
        v //= 2
    return v


@functools.lru_cache(maxsize=None)  # the per-call host path builds no new objects
def pack_topk_kernel(ids_dtype: str, weights_dtype: str, k: int, align_bytes: int, pdl: bool) -> TopkPack:
    """The specialisation for these dtypes, k and pointer alignment (bytes, a power of two).

    Each thread moves ``vec`` elements; ``vec`` divides k (so groups never straddle the end) and
    every vector access (at most 16 bytes each) within the tensors' alignment."""
    sizes = (8 if ids_dtype == "int64" else 4, 4 if weights_dtype == "float32" else 2, 4)
    vec = _pow2_dividing(k, 8)
    while vec > 1 and any(min(vec * size, 16) > align_bytes for size in sizes):
        vec //= 2
    return TopkPack(ids_dtype, weights_dtype, k, vec, pdl)


def pack_topk(ids: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
              pdl: bool = True) -> torch.Tensor:
    """Packs top-k expert ids and routing weights into int32: ``(id << 16) | bits(bf16(weight))``.

    ids: int32/int64 [T, k]; weights: float32/bfloat16 [T, k]; out: int32 [T, k] (allocated if
    None). All contiguous, on one CUDA device (sm_90+). Only the low 16 bits of an id survive.
    ``pdl``: launch with programmatic dependent launch (overlaps the previous kernel's tail).
    Semantics: ``cute_kernels.reference.pack_topk``.
    """
    t, k = bridge.check_tensor("ids", ids, dtypes=(torch.int32, torch.int64), shape=(None, None))
    bridge.check_tensor("weights", weights, dtypes=(torch.float32, torch.bfloat16), shape=(t, k))
    device = bridge.check_same_device(ids=ids, weights=weights)
    if t * k > _MAX_ELEMENTS:
        raise ValueError(f"ids has {t * k} elements; at most {_MAX_ELEMENTS} are supported")
    bridge.check_contiguous("ids", ids)
    bridge.check_contiguous("weights", weights)
    return pack_topk_launcher(ids.dtype, weights.dtype, k, device, pdl)(t, ids, weights, out)


@functools.lru_cache(maxsize=256)
def pack_topk_launcher(ids_dtype: torch.dtype, weights_dtype: torch.dtype, k: int, device: torch.device, pdl: bool):
    """``launch(T, ids, weights, out) -> out`` for calls already checked to be this problem: ids
    and weights [T, k] of these dtypes, contiguous, on ``device``, T * k <= 2**31 - 1. Only
    ``out`` is checked (allocated when None); the pointers' alignment picks the specialisation."""
    names = bridge.dtype_name(ids_dtype), bridge.dtype_name(weights_dtype)
    launch_kernel = bridge.Launcher(lambda align: pack_topk_kernel(*names, k, align, pdl), device).launch

    def launch(t, ids, weights, out):
        if out is None:
            out = ids.new_empty(t, k, dtype=torch.int32)
        else:
            bridge.check_output("out", out, dtype=torch.int32, shape=(t, k), device=device, ids=ids, weights=weights)
            bridge.check_contiguous("out", out)
        if t and k:
            launch_kernel(bridge.alignment(ids, weights, out), ids, weights, out)
        return out

    return launch


SILU_GROUP_SIZES = (64, 128)
SCALE_LAYOUTS = ("row", "col")


@functools.lru_cache(maxsize=None)
def silu_mul_quant_kernel(x_dtype: str, hidden: int, group_size: int, ue8m0: bool, has_scale_ub: bool,
                          scale_layout: str, pdl: bool) -> SiluMulQuantFp8:
    return SiluMulQuantFp8(x_dtype, hidden, group_size, ue8m0, has_scale_ub, scale_layout, pdl)


def silu_mul_quant_fp8(x: torch.Tensor, group_size: int = 128, *, scale_ub: torch.Tensor | None = None,
                       ue8m0: bool = False, scale_layout: str = "row", out: torch.Tensor | None = None,
                       scales: torch.Tensor | None = None, pdl: bool = True):
    """``silu(gate) * up`` quantised to float8_e4m3fn with one fp32 scale per group of columns.

    x: bf16/fp16 [T, 2H] = [gate | up], contiguous and 16-byte aligned. Returns ``(q, scales)``:
    q float8_e4m3fn [T, H] (contiguous), scales fp32 [T, H // group_size], row-major for
    ``scale_layout="row"`` or with strides (1, T) for ``"col"``. ``out`` / ``scales`` may be
    given instead of allocated. group_size: 64 or 128, dividing H. ``scale_ub``: a one-element
    fp32 tensor capping every scale. ``ue8m0``: scales rounded up to powers of two.
    ``pdl``: launch with programmatic dependent launch.
    Semantics: ``cute_kernels.reference.silu_mul_quant_fp8``.
    """
    t, width = bridge.check_tensor("x", x, dtypes=(torch.bfloat16, torch.float16), shape=(None, None))
    if group_size not in SILU_GROUP_SIZES:
        raise ValueError(f"group_size must be 64 or 128; got {group_size!r}")
    if scale_layout not in SCALE_LAYOUTS:
        raise ValueError(f"scale_layout must be 'row' or 'col'; got {scale_layout!r}")
    if width % 2:
        raise ValueError(f"x must have an even width ([gate | up]); got shape {tuple(x.shape)}")
    h = width // 2
    if h == 0 or h % group_size:
        raise ValueError(f"x's half-width H={h} must be a positive multiple of group_size={group_size}")
    if scale_ub is not None and not (isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == torch.float32
                                     and scale_ub.numel() == 1):
        got = (f"{scale_ub.dtype} {tuple(scale_ub.shape)}" if isinstance(scale_ub, torch.Tensor)
               else type(scale_ub).__name__)
        raise TypeError(f"scale_ub must be a one-element float32 tensor; got {got}")
    device = bridge.check_same_device(x=x)
    bridge.check_contiguous("x", x)
    _check_aligned(16, x=x)
    if scale_ub is not None:
        bridge.check_same_device(x=x, scale_ub=scale_ub)
    if t * width > _MAX_ELEMENTS:
        raise ValueError(f"x has {t * width} elements; at most {_MAX_ELEMENTS} are supported")
    launch = silu_mul_quant_launcher(x.dtype, h, group_size, bool(ue8m0), scale_ub is not None, scale_layout,
                                     device, pdl)
    return launch(t, x, group_size, scale_ub, ue8m0, scale_layout, out, scales)


@functools.lru_cache(maxsize=256)
def silu_mul_quant_launcher(x_dtype: torch.dtype, h: int, group_size: int, ue8m0: bool, has_scale_ub: bool,
                            scale_layout: str, device: torch.device, pdl: bool):
    """``launch(T, x, group_size, scale_ub, ue8m0, scale_layout, out, scales) -> (out, scales)``
    for calls already checked to be this problem: x [T, 2H] of this dtype, contiguous and
    16-byte aligned, scale_ub (given exactly when ``has_scale_ub``) a one-element fp32 tensor,
    all on ``device``, T * 2H <= 2**31 - 1. Only ``out`` and ``scales`` are checked (allocated
    when None)."""
    kernel = silu_mul_quant_kernel(bridge.dtype_name(x_dtype), h, group_size, ue8m0, has_scale_ub, scale_layout, pdl)
    launch_kernel = bridge.Launcher(lambda _: kernel, device).launch
    g = h // group_size
    no_ub = _unread(device)

    def launch(t, x, group_size, scale_ub, ue8m0, scale_layout, out, scales):
        if out is None:
            out = x.new_empty(t, h, dtype=torch.float8_e4m3fn)
        else:
            bridge.check_output("out", out, dtype=torch.float8_e4m3fn, shape=(t, h), device=device, x=x,
                                scale_ub=scale_ub)
            bridge.check_contiguous("out", out)
            _check_aligned(8, out=out)
        s_strides = (g, 1) if scale_layout == "row" else (1, t)
        if scales is None:
            scales = x.new_empty_strided((t, g), s_strides, dtype=torch.float32)
        else:
            bridge.check_output("scales", scales, dtype=torch.float32, shape=(t, g), device=device, x=x, out=out,
                                scale_ub=scale_ub)
            _check_strides("scales", scales, s_strides, scale_layout)
        if t:
            launch_kernel(None, x, out, scales, no_ub if scale_ub is None else scale_ub.as_strided((1,), (1,)))
        return out, scales

    return launch


def _check_aligned(need: int, **tensors: torch.Tensor) -> None:
    """TMA and vector accesses need ``need``-byte (a power of two) aligned data pointers."""
    for name, t in tensors.items():
        if t.data_ptr() % need:
            raise ValueError(f"{name} must be {need}-byte aligned (its data pointer is not)")


def _check_router_sizes(weight_name: str, h: int, e: int, out_dtype: torch.dtype) -> None:
    """What both router kernels need of H, E and the logits dtype."""
    if out_dtype not in ROUTER_OUT_DTYPES:
        raise TypeError(f"out_dtype must be torch.float32 or torch.bfloat16; got {out_dtype}")
    if h == 0 or h % 8:
        raise ValueError(f"x's hidden size H={h} must be a positive multiple of 8")
    if e == 0:
        raise ValueError(f"{weight_name} must have at least one expert row (E >= 1)")


def _check_strides(name: str, t: torch.Tensor, strides: tuple, layout: str) -> None:
    # Strides of size-1 dims carry no meaning; torch may report anything there.
    ok = all(size <= 1 or got == want for size, got, want in zip(t.shape, t.stride(), strides))
    if not ok:
        raise ValueError(f"{name} must have strides {strides} for scale_layout={layout!r}; got {t.stride()}")


ROUTER_X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ROUTER_W_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ROUTER_OUT_DTYPES = (torch.float32, torch.bfloat16)
ROUTER_SMEM_BUDGET = 200 * 1024  # bytes per CTA; H100 allows 227 KB
H100_SMS = 132
DOT_WARPS = 8  # consumer warps of the dot variant
DOT_MAX_ACC = 64  # fp32 accumulators per lane in the dot variant: m_tile * e_tile
# CTAs per SM the plain router's dot grid aims for with one token tile. H100, cold, PDL on:
# DeepSeek-V3 at 3 experts per CTA (86 CTAs) beat 2 (128 CTAs) by 0.07 us at M = 1 and 0.15 at
# M = 4; Kimi-K2 at 96 and 128 CTAs tied. With several token tiles one CTA per SM stays ahead
# (MiniMax-M2 M = 16: 3.57 us at 128 CTAs, 4.56 at 86), and the fused kernel keeps one per SM
# too (its 3 experts per CTA beat 6 by 0.2 us).
DOT_CTAS_PER_SM = 0.73
# The tensor-core variant holds a CTA's share of H in shared memory; at its smallest tiling (16
# experts, 8 tokens, 8-way split) that fits up to H = 33792 with 16-bit weights, 19456 with fp32
# ones (``router_mma_max_h``).
ROUTER_MMA_MAX_H = 32768  # 16-bit weights; half of it for fp32 weights
ROUTER_DOT_MAX_M = 4  # above this M, calls the tensor cores take default to the mma variant
# Consumer warps of the tensor-core variant, in order of preference. A stage row holds 32 columns
# per warp; with an odd count it is an odd multiple of 64 bytes, so the two rows one quarter-warp's
# 16-byte fragment loads touch fall on disjoint shared-memory banks (with 4 warps every load was a
# 2-way conflict). H100, cold (perf/NOTES.md, eighth round): the most warps that still leave each
# warp MMA_MIN_STEPS k tiles of the CTA's share won (DeepSeek-V3 M = 16: 7 warps 2.92 us, 4 warps
# 3.05; gpt-oss-120b M = 128: 3 warps 3.50, 4 warps 3.77, 7 warps 4.67).
MMA_WARPS = (7, 5, 3)
MMA_MIN_STEPS = 3


def router_gemm_variant(x_dtype: str, w_dtype: str, m: int, h: int) -> str:
    """Default consumer: tensor cores once a few tokens share each weight (``mma_dtypes``, H up
    to ``router_mma_max_h``)."""
    if mma_dtypes(x_dtype, w_dtype) and m > ROUTER_DOT_MAX_M and h <= router_mma_max_h(w_dtype):
        return "mma"
    return "dot"


def mma_dtypes(x_dtype: str, w_dtype: str) -> bool:
    """Whether the tensor-core variant takes these dtypes: both bf16, both fp16, or bf16 x with
    fp32 weights (fed as three exact bf16 parts)."""
    return (x_dtype, w_dtype) in MMA_DTYPES


def router_mma_max_h(w_dtype: str) -> int:
    """The largest H the tensor-core variant takes with these weights."""
    return ROUTER_MMA_MAX_H * 16 // WIDTHS[w_dtype]


def router_m_tile(variant: str, m: int) -> int:
    """Token tile: a power of two covering M, from a small fixed set (bounded compiles)."""
    lo, hi = (8, 64) if variant == "mma" else (1, 8)
    tile = lo
    while tile < min(m, hi):
        tile *= 2
    return tile


@functools.lru_cache(maxsize=4096)
def router_gemm_kernel(x_dtype: str, w_dtype: str, out_dtype: str, bias_dtype: str | None, m: int, h: int,
                       e: int, variant: str, pdl: bool, num_sms: int = H100_SMS) -> RouterGemm:
    """The specialisation for a call. Tiles come from M's bucket.

    ``dot``: no split where a CTA's share of H fits (DeepSeek-V3 M = 1: 2.30 us, 2.41 split 2
    ways across a cluster); the expert tile spreads the experts (times the
    token tiles) over about DOT_CTAS_PER_SM CTAs per SM (one per SM with several token tiles),
    at least 2 experts per CTA (fewer, fuller CTAs measured 0.05-0.1 us faster on small E, and
    far faster at M = 4), at most 64 accumulators per lane. Eight consumer warps take the CTA's
    k tiles in turn (fewer when it has fewer tiles).
    ``mma`` (H100, perf/NOTES.md): H split 8 ways across a cluster; 32-expert tiles of M's
    token bucket up to 16 tokens, 32 x 16-token tiles up to 64, then 32-token tiles of 16
    experts (32 below 256 experts). Measured DeepSeek-V3: M = 16 3.21 us, M = 32 4.14, M = 128
    12.24, each the best or within 0.15 us of the best of 28 tilings and reductions. With fp32
    weights (three MMAs per weight) 16-expert tiles of 8, 16, 16 and 32 tokens up to M = 8, 16,
    32 and beyond: MiniMax-M2 M = 32 3.35 us against 3.88 with the 16-bit tiles. Consumer warps:
    ``mma_warps`` (odd counts for 16-bit weights: DeepSeek-V3 M = 16 2.92 us with 7, 3.05 with 4).
    Both hold a CTA's whole share of H in shared memory (``router_stages``); where it does not
    fit, fewer tokens share a CTA, then (dot) fewer experts, then H is split (further). Splits
    reduce across a cluster: through the global workspace (``RouterGemm.reduce``, an explicit
    config) the same splits measured 1.5-2.5 us slower up to M = 16, level at M = 128."""
    m_tile = router_m_tile(variant, m)

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
                    if stages := router_stages(probe, h):
                        return dataclasses.replace(probe, stages=stages)
        raise ValueError(f"hidden size H={h} is too large for the router kernel's shared memory")
    if w_dtype == "float32":  # 16-expert tiles first at every M (MiniMax-M2/M3, perf/NOTES.md)
        tiles = [(16, m_tile if m <= 16 else 16 if m <= 32 else 32)]
    elif m <= 16:
        tiles = [(32, m_tile), (16, m_tile)]
    elif m <= 64:
        tiles = [(32, 16), (16, 16)]
    else:
        tiles = [(16 if e >= 256 else 32, 32), (16, 16)]
    # 16 x 8 tiles with 4 warps hold any H up to router_mma_max_h.
    for e_tile, tile in dict.fromkeys(tiles + [(16, 8)]):
        for warps in mma_warps(h, w_dtype):
            probe = make(e_tile, tile, 1, warps)
            probe = dataclasses.replace(probe, split_k=min(8, -(-h // probe.k_tile)))  # >= 1 k tile per CTA
            if stages := router_stages(probe, h):
                return dataclasses.replace(probe, stages=stages)
    raise ValueError(f"hidden size H={h} is too large for the router kernel's shared memory")


def mma_warps(h: int, w_dtype: str) -> list[int]:
    """Consumer-warp counts for the tensor-core variant, best first. 16-bit weights: of
    ``MMA_WARPS``, those that leave every CTA of the 8-way split at least ``MMA_MIN_STEPS`` k
    tiles, most warps first, then the rest, most k tiles first; 4 last (the count whose smallest
    tiling fits every H up to ``router_mma_max_h``). fp32 weights: 4 only (a warp's weight columns
    are 128 bytes per row at any count, so their loads conflict anyway; odd counts measured up to
    3.5 us slower, MiniMax-M3 M = 128)."""
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


def router_stages(kernel: RouterGemm, h: int) -> int:
    """Stages for a CTA's whole share of H (the kernel never reuses a stage), or 0 when they do
    not fit in the shared-memory budget."""
    share = kernel.k_tiles_per_cta(h)
    return share if kernel.fixed_smem + share * kernel.smem_per_stage <= ROUTER_SMEM_BUDGET else 0


@functools.lru_cache(maxsize=None)
def _unread(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One element for a slot the kernel was compiled not to read (no bias, no scale cap, no
    split-K workspace)."""
    return torch.zeros((1,), dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None, pdl: bool = True,
                variant: str | None = None, config: RouterGemm | None = None) -> torch.Tensor:
    """Router logits ``x @ weight.T (+ bias)`` with fp32 accumulation, rounded once to out_dtype.

    x: [M, H] bf16/fp16/fp32; weight: [E, H] bf16/fp16/fp32 (fp32 weights are used as fp32:
    no TF32, nothing rounded to bf16; on tensor cores each enters as three bf16 parts that sum
    to it exactly); bias: [E] float or None; out: [M, E] fp32 or bf16 (allocated if None). H
    must be a positive multiple of 8; x and weight contiguous and 16-byte aligned (TMA). Any
    M >= 0 and E >= 1. ``variant``: "dot" (CUDA cores) or "mma" (tensor cores: x and weight
    both bf16 or both fp16, or bf16 x with fp32 weights; H <= ``router_mma_max_h``); None picks
    by M.
    ``pdl``: launch with programmatic dependent launch (the weight stream starts before the
    previous kernel has finished). ``config``: an explicit ``RouterGemm`` specialisation (for
    tuning sweeps) instead of the heuristic's; its dtypes must match the call's.
    Semantics: ``cute_kernels.reference.router_gemm``.
    """
    m, h = bridge.check_tensor("x", x, dtypes=ROUTER_X_DTYPES, shape=(None, None))
    e, _ = bridge.check_tensor("weight", weight, dtypes=ROUTER_W_DTYPES, shape=(None, h))
    _check_router_sizes("weight", h, e, out_dtype)
    device = bridge.check_same_device(x=x, weight=weight)
    if bias is not None:
        bridge.check_tensor("bias", bias, dtypes=ROUTER_W_DTYPES, shape=(e,))
        bridge.check_same_device(x=x, bias=bias)
        bridge.check_contiguous("bias", bias)
    for name, t in (("x", x), ("weight", weight)):
        bridge.check_contiguous(name, t)
    _check_aligned(16, x=x, weight=weight)  # TMA
    if max(m * h, e * h, m * e) > _MAX_ELEMENTS:
        raise ValueError(f"x, weight or out has more than {_MAX_ELEMENTS} elements")
    names = bridge.dtype_name(x.dtype), bridge.dtype_name(weight.dtype)
    if variant is None:
        variant = router_gemm_variant(*names, m, h)
    elif variant not in ("dot", "mma"):
        raise ValueError(f"variant must be 'dot', 'mma' or None; got {variant!r}")
    elif variant == "mma" and not mma_dtypes(*names):
        raise ValueError(f"variant='mma' needs x and weight both bf16 or both fp16, or bf16 x with fp32 weights; "
                         f"got {names[0]} x {names[1]}")
    elif variant == "mma" and h > router_mma_max_h(names[1]):
        raise ValueError(f"variant='mma' takes H up to {router_mma_max_h(names[1])} with {names[1]} weights (a CTA's "
                         f"share of H must fit in shared memory); got H={h}: use variant='dot'")
    bias_dtype = None if bias is None else bias.dtype
    if config is not None:
        if (config.x_dtype, config.w_dtype, config.out_dtype, config.bias_dtype) != (
                *names, bridge.dtype_name(out_dtype), bias_dtype and bridge.dtype_name(bias_dtype)):
            raise ValueError(f"config {config} does not match the call's dtypes")
        if not config.holds_share(h):
            raise ValueError(f"config {config}: its {config.stages} stages do not hold a CTA's "
                             f"{config.k_tiles_per_cta(h)} k tiles of H={h}")
    launch = router_gemm_launcher(x.dtype, weight.dtype, bias_dtype, out_dtype, h, e, variant, device, pdl, config)
    return launch(m, x, weight, bias, out_dtype, out)


@functools.lru_cache(maxsize=256)
def router_gemm_launcher(x_dtype: torch.dtype, w_dtype: torch.dtype, bias_dtype: torch.dtype | None,
                         out_dtype: torch.dtype, h: int, e: int, variant: str, device: torch.device, pdl: bool,
                         config: RouterGemm | None = None):
    """``launch(M, x, weight, bias, out_dtype, out) -> out`` for calls already checked to be this
    problem: x [M, H] and weight [E, H] of these dtypes, contiguous and 16-byte aligned, bias
    None (``bias_dtype`` None) or contiguous [E], all on ``device``, M * max(H, E) <= 2**31 - 1.
    Only ``out`` is checked (allocated when None); each M's specialisation is looked up once
    (``config``: that one for every M)."""
    names = [bridge.dtype_name(d) for d in (x_dtype, w_dtype, out_dtype)]
    bias_name = None if bias_dtype is None else bridge.dtype_name(bias_dtype)
    num_sms = _num_sms(device.index)

    def kernel_of(m):
        return config if config is not None else router_gemm_kernel(*names, bias_name, m, h, e, variant, pdl, num_sms)

    launch_kernel = bridge.Launcher(kernel_of, device).launch
    no_bias, no_workspace = _unread(device), _unread(device, torch.int32)
    workspace_ints = {}  # M -> the split-K workspace its specialisation needs (0: none)

    def launch(m, x, weight, bias, out_dtype, out):
        if out is None:
            out = x.new_empty(m, e, dtype=out_dtype)
        else:
            bridge.check_output("out", out, dtype=out_dtype, shape=(m, e), device=device, x=x, weight=weight,
                                bias=bias)
            bridge.check_contiguous("out", out)
        if m:
            ints = workspace_ints.get(m)
            if ints is None:
                if len(workspace_ints) >= bridge.Launcher.MAX_KEYS:
                    workspace_ints.clear()
                ints = workspace_ints[m] = kernel_of(m).workspace_ints(m, e)
            launch_kernel(m, x, weight, no_bias if bias is None else bias, out,
                          bridge.workspace(device, ints) if ints else no_workspace)
        return out

    return launch


NORM_X_DTYPES = (torch.bfloat16, torch.float16)
NORM_WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
NORM_GATE_DTYPES = (torch.bfloat16, torch.float32)
# H100, DeepSeek-V4-Pro, cold (perf/NOTES.md, sixth round): the tensor-core variant takes 3.74-3.76 us
# at any M up to 8 tokens; the dot variant 2.91 / 3.37 / 3.92 / 3.84 at M = 1 / 2 / 3 / 4.
NORM_DOT_MAX_M = 2


@functools.lru_cache(maxsize=4096)
def norm_router_gemm_kernel(x_dtype: str, norm_dtype: str, w_dtype: str, out_dtype: str, m: int, h: int, e: int,
                            pdl: bool, num_sms: int = H100_SMS) -> NormRouterGemm:
    """Tensor cores (the router's mma tiling) above NORM_DOT_MAX_M tokens when x, the norm
    weight and the gate are all bf16; otherwise the dot variant with the router's expert tile
    and no cluster (measured on the H100, DeepSeek-V4-Pro M = 1: 3.16 us without a cluster,
    5.0-5.5 with 2- or 4-CTA clusters, although each CTA then reads all of x and the norm
    weight). Each CTA keeps all of its x and norm-weight tiles resident; where they do not
    fit, H is split across a cluster (2, 4, then 8 ways), then fewer tokens share a CTA.
    ValueError if even one token's share of H cannot stay resident."""
    mma = x_dtype == norm_dtype == w_dtype == "bfloat16" and m > NORM_DOT_MAX_M and h <= ROUTER_MMA_MAX_H
    for variant in ("mma", "dot") if mma else ("dot",):
        m_tile = router_m_tile(variant, m)
        tiles = [t for t in (64, 32, 16, 8, 4, 2, 1) if t <= m_tile and (variant == "dot" or t >= 8)]
        for tile in tiles:
            m_tiles = -(-m // tile)
            for split_cap in (1, 2, 4, 8) if variant == "dot" else (None, 8):
                if variant == "mma":
                    base = router_gemm_kernel(x_dtype, w_dtype, out_dtype, None, m, h, e, "mma", pdl, num_sms)
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
                if stages := router_stages(probe, h):
                    return dataclasses.replace(probe, stages=stages)
    raise ValueError(f"hidden size H={h} is too large for the fused kernel: a CTA's share of x does not fit "
                     "in shared memory (use the router GEMM on normed rows)")


def fused_mma_warps(router_warps: int) -> int:
    """Consumer warps of the fused kernel's tensor-core variant, given the router's pick for the
    same shape: 7 where the router takes 7, else 4. H100, cold (perf/NOTES.md, eighth round):
    DeepSeek-V4-Pro M = 16 4.13 us with 7 warps against 4.19 with 4, but DeepSeek-V4-Flash (the
    router's 5) M = 16 3.82 with 5 against 3.38 with 4."""
    return router_warps if router_warps == max(MMA_WARPS) else 4


def norm_router_gemm(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor, eps: float = 1e-6, *,
                     out_dtype: torch.dtype = torch.float32, normed_out: torch.Tensor | None = None,
                     logits_out: torch.Tensor | None = None, pdl: bool = True):
    """RMSNorm fused with the router GEMM, one kernel. Returns ``(normed_x, logits)``.

    ``r = 1 / sqrt(mean(x[m]^2) + eps)`` (mean over H); ``normed_x = x * r * norm_weight``
    rounded once to x's dtype; ``logits = (x * r * norm_weight) @ gate_weight.T`` from the
    unrounded fp32 values (not from normed_x), rounded once to out_dtype. All math in fp32.

    x: [M, H] bf16/fp16; norm_weight: [H] bf16/fp16/fp32; gate_weight: [E, H] bf16/fp32;
    eps: a float >= 0 (a runtime argument: no recompile per value); out_dtype: fp32 or bf16;
    normed_out [M, H] (x's dtype) and logits_out [M, E] are allocated if None. H a positive
    multiple of 8; x, norm_weight, gate_weight and normed_out contiguous and 16-byte aligned.
    Any M >= 0 (the kernel is tuned for M <= 64) and E >= 1. ``pdl``: programmatic dependent
    launch (the gate and norm weights stream before the previous kernel has finished).
    Semantics: ``cute_kernels.reference.rmsnorm_router_gemm``.
    """
    m, h = bridge.check_tensor("x", x, dtypes=NORM_X_DTYPES, shape=(None, None))
    bridge.check_tensor("norm_weight", norm_weight, dtypes=NORM_WEIGHT_DTYPES, shape=(h,))
    e, _ = bridge.check_tensor("gate_weight", gate_weight, dtypes=NORM_GATE_DTYPES, shape=(None, h))
    _check_router_sizes("gate_weight", h, e, out_dtype)
    if isinstance(eps, torch.Tensor) or not float(eps) >= 0.0:
        raise ValueError(f"eps must be a float >= 0; got {eps!r}")
    device = bridge.check_same_device(x=x, norm_weight=norm_weight, gate_weight=gate_weight)
    if max(m * h, e * h, m * e) > _MAX_ELEMENTS:
        raise ValueError(f"x, gate_weight or logits_out has more than {_MAX_ELEMENTS} elements")
    inputs = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight}
    for name, t in inputs.items():
        bridge.check_contiguous(name, t)
    _check_aligned(16, **inputs)  # TMA loads
    launch = norm_router_gemm_launcher(x.dtype, norm_weight.dtype, gate_weight.dtype, out_dtype, h, e, device, pdl)
    return launch(m, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)


@functools.lru_cache(maxsize=256)
def norm_router_gemm_launcher(x_dtype: torch.dtype, norm_dtype: torch.dtype, gate_dtype: torch.dtype,
                              out_dtype: torch.dtype, h: int, e: int, device: torch.device, pdl: bool):
    """``launch(M, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out) ->
    (normed_out, logits_out)`` for calls already checked to be this problem: x [M, H],
    norm_weight [H] and gate_weight [E, H] of these dtypes, contiguous and 16-byte aligned, on
    ``device``, eps >= 0, M * max(H, E) <= 2**31 - 1. Only the outputs are checked (allocated
    when None); each M's specialisation is looked up once."""
    names = [bridge.dtype_name(d) for d in (x_dtype, norm_dtype, gate_dtype, out_dtype)]
    num_sms = _num_sms(device.index)
    launch_kernel = bridge.Launcher(lambda m: norm_router_gemm_kernel(*names, m, h, e, pdl, num_sms), device).launch

    def launch(m, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
        if normed_out is None:
            normed_out = x.new_empty(m, h)
        else:
            bridge.check_output("normed_out", normed_out, dtype=x.dtype, shape=(m, h), device=device, x=x,
                                norm_weight=norm_weight, gate_weight=gate_weight)
            bridge.check_contiguous("normed_out", normed_out)
            _check_aligned(16, normed_out=normed_out)  # 16-byte stores
        if logits_out is None:
            logits_out = x.new_empty(m, e, dtype=out_dtype)
        else:
            bridge.check_output("logits_out", logits_out, dtype=out_dtype, shape=(m, e), device=device, x=x,
                                norm_weight=norm_weight, gate_weight=gate_weight, normed_out=normed_out)
            bridge.check_contiguous("logits_out", logits_out)
        if m:
            launch_kernel(m, x, gate_weight, norm_weight.view(1, h), logits_out, normed_out, float(eps))
        return normed_out, logits_out

    return launch
