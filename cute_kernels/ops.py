"""Public ops: validate through the bridge, pick the compiled specialisation, launch."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import torch

from . import bridge
from .kernels.common import WIDTHS
from .kernels.router_gemm import NormRouterGemm, RouterGemm
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
    bridge.check_tensor("ids", ids, dtypes=(torch.int32, torch.int64), shape=(None, None))
    t, k = ids.shape
    bridge.check_tensor("weights", weights, dtypes=(torch.float32, torch.bfloat16), shape=(t, k))
    device = bridge.check_same_device(ids=ids, weights=weights)
    if t * k > _MAX_ELEMENTS:
        raise ValueError(f"ids has {t * k} elements; at most {_MAX_ELEMENTS} are supported")
    if out is None:
        out = torch.empty((t, k), dtype=torch.int32, device=device)
    else:
        bridge.check_tensor("out", out, dtypes=(torch.int32,), shape=(t, k))
        bridge.check_same_device(ids=ids, out=out)
        bridge.check_no_overlap("out", out, ids=ids, weights=weights)
    for name, x in (("ids", ids), ("weights", weights), ("out", out)):
        bridge.check_contiguous(name, x)
    if t * k == 0:
        return out
    kernel = pack_topk_kernel(bridge.dtype_name(ids.dtype), bridge.dtype_name(weights.dtype), k,
                              bridge.alignment(ids, weights, out), pdl)
    bridge.launch(bridge.compiled(kernel, device), device, ids, weights, out)
    return out


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
    bridge.check_tensor("x", x, dtypes=(torch.bfloat16, torch.float16), shape=(None, None))
    if group_size not in SILU_GROUP_SIZES:
        raise ValueError(f"group_size must be 64 or 128; got {group_size!r}")
    if scale_layout not in SCALE_LAYOUTS:
        raise ValueError(f"scale_layout must be 'row' or 'col'; got {scale_layout!r}")
    t, width = x.shape
    if width % 2:
        raise ValueError(f"x must have an even width ([gate | up]); got shape {tuple(x.shape)}")
    h = width // 2
    if h == 0 or h % group_size:
        raise ValueError(f"x's half-width H={h} must be a positive multiple of group_size={group_size}")
    g = h // group_size
    if scale_ub is not None and not (isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == torch.float32
                                     and scale_ub.numel() == 1):
        got = (f"{scale_ub.dtype} {tuple(scale_ub.shape)}" if isinstance(scale_ub, torch.Tensor)
               else type(scale_ub).__name__)
        raise TypeError(f"scale_ub must be a one-element float32 tensor; got {got}")
    device = bridge.check_same_device(x=x)
    bridge.check_contiguous("x", x)
    if scale_ub is not None:
        bridge.check_same_device(x=x, scale_ub=scale_ub)
    if t * width > _MAX_ELEMENTS:
        raise ValueError(f"x has {t * width} elements; at most {_MAX_ELEMENTS} are supported")
    if out is None:
        out = torch.empty((t, h), dtype=torch.float8_e4m3fn, device=device)
    else:
        bridge.check_tensor("out", out, dtypes=(torch.float8_e4m3fn,), shape=(t, h))
        bridge.check_same_device(x=x, out=out)
        bridge.check_contiguous("out", out)
        bridge.check_no_overlap("out", out, x=x)
    s_strides = (g, 1) if scale_layout == "row" else (1, t)
    if scales is None:
        scales = torch.empty_strided((t, g), s_strides, dtype=torch.float32, device=device)
    else:
        bridge.check_tensor("scales", scales, dtypes=(torch.float32,), shape=(t, g))
        bridge.check_same_device(x=x, scales=scales)
        _check_strides("scales", scales, s_strides, scale_layout)
        bridge.check_no_overlap("scales", scales, x=x, out=out)
    if scale_ub is not None:
        bridge.check_no_overlap("out", out, scale_ub=scale_ub)
        bridge.check_no_overlap("scales", scales, scale_ub=scale_ub)
    if t == 0:
        return out, scales
    _check_aligned(16, x=x)
    _check_aligned(8, out=out)
    kernel = silu_mul_quant_kernel(bridge.dtype_name(x.dtype), h, group_size, bool(ue8m0), scale_ub is not None,
                                   scale_layout, pdl)
    # Without a cap the kernel reads nothing there; any one-element fp32 view fills the slot.
    ub = (scale_ub if scale_ub is not None else scales).as_strided((1,), (1,))
    bridge.launch(bridge.compiled(kernel, device), device, x, out, scales, ub)
    return out, scales


def _check_aligned(need: int, **tensors: torch.Tensor) -> None:
    """TMA and vector accesses need ``need``-byte aligned data pointers."""
    for name, t in tensors.items():
        if bridge.alignment(t) < need:
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
ROUTER_DOT_MAX_M = 4  # above this M, 16-bit same-dtype calls default to the tensor-core variant


def router_gemm_variant(x_dtype: str, w_dtype: str, m: int) -> str:
    """Default consumer: tensor cores once a few tokens share each weight (16-bit, same dtype)."""
    if x_dtype == w_dtype and w_dtype in ("bfloat16", "float16") and m > ROUTER_DOT_MAX_M:
        return "mma"
    return "dot"



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

    ``dot``: the smallest expert tile (4) and the smallest cluster that still gives about one
    CTA per SM. Measured on the H100 (DeepSeek-V3 and Kimi-K2, M = 1..4): every split_k = 8
    config was 0.3-1.2 us slower than the best one at split 2-4, and small expert tiles spread
    the per-token FMAs over more SMs, which is what M > 1 needs.
    ``mma``: the expert tile and split minimise the bytes one SM streams (per-CTA bytes times
    waves)."""
    m_tile = router_m_tile(variant, m)
    m_tiles = -(-m // m_tile)
    if variant == "dot":
        e_tile, k_tile = 4, RouterGemm(x_dtype, w_dtype, out_dtype, bias_dtype, variant, 4, m_tile, 1, 1, pdl).k_tile
        n_k = -(-h // k_tile)
        splits = [s for s in (1, 2, 4, 8) if s <= n_k]
        split_k = next((s for s in splits if -(-e // e_tile) * s * m_tiles >= 0.9 * num_sms), splits[-1])
    else:
        best = None
        for e_tile in (16, 32, 64):
            for split_k in (1, 2, 4, 8):
                probe = RouterGemm(x_dtype, w_dtype, out_dtype, bias_dtype, variant, e_tile, m_tile, split_k, 1, pdl)
                if split_k > -(-h // probe.k_tile):
                    continue
                ctas = -(-e // e_tile) * split_k * m_tiles
                cta_bytes = (e_tile * WIDTHS[w_dtype] + m_tile * WIDTHS[x_dtype]) // 8 * -(-h // split_k)
                score = (cta_bytes * -(-ctas // num_sms), ctas, split_k)
                if best is None or score < best[0]:
                    best = (score, e_tile, split_k)
        _, e_tile, split_k = best
    one = RouterGemm(x_dtype, w_dtype, out_dtype, bias_dtype, variant, e_tile, m_tile, split_k, 1, pdl)
    stages = max(2, router_stages(one, h))
    return RouterGemm(x_dtype, w_dtype, out_dtype, bias_dtype, variant, e_tile, m_tile, split_k, stages, pdl)


def router_stages(kernel: RouterGemm, h: int) -> int:
    """Ring depth: a CTA's whole share of H in flight, as far as the shared-memory budget allows."""
    return min(_k_tiles_per_cta(kernel, h), (ROUTER_SMEM_BUDGET - kernel.fixed_smem) // kernel.smem_per_stage)


def _k_tiles_per_cta(kernel: RouterGemm, h: int) -> int:
    return -(-(-(-h // kernel.k_tile)) // kernel.split_k)


@functools.lru_cache(maxsize=None)
def _no_bias(device: torch.device) -> torch.Tensor:
    """Fills the bias slot of a kernel compiled without bias (never read)."""
    return torch.zeros((1,), dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None, pdl: bool = True,
                variant: str | None = None, config: RouterGemm | None = None) -> torch.Tensor:
    """Router logits ``x @ weight.T (+ bias)`` with fp32 accumulation, rounded once to out_dtype.

    x: [M, H] bf16/fp16/fp32; weight: [E, H] bf16/fp16/fp32 (fp32 weights are used as fp32:
    no TF32, nothing rounded to bf16); bias: [E] float or None; out: [M, E] fp32 or bf16
    (allocated if None). H must be a positive multiple of 8; x and weight contiguous and
    16-byte aligned (TMA). Any M >= 0 and E >= 1. ``variant``: "dot" (CUDA cores) or "mma"
    (tensor cores; x and weight both bf16 or both fp16); None picks by M.
    ``pdl``: launch with programmatic dependent launch (the weight stream starts before the
    previous kernel has finished). ``config``: an explicit ``RouterGemm`` specialisation (for
    tuning sweeps) instead of the heuristic's; its dtypes must match the call's.
    Semantics: ``cute_kernels.reference.router_gemm``.
    """
    bridge.check_tensor("x", x, dtypes=ROUTER_X_DTYPES, shape=(None, None))
    m, h = x.shape
    bridge.check_tensor("weight", weight, dtypes=ROUTER_W_DTYPES, shape=(None, h))
    e = weight.shape[0]
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
    if out is None:
        out = torch.empty((m, e), dtype=out_dtype, device=device)
    else:
        bridge.check_tensor("out", out, dtypes=(out_dtype,), shape=(m, e))
        bridge.check_same_device(x=x, out=out)
        bridge.check_contiguous("out", out)
        bridge.check_no_overlap("out", out, x=x, weight=weight, **({} if bias is None else {"bias": bias}))
    names = bridge.dtype_name(x.dtype), bridge.dtype_name(weight.dtype)
    if variant is None:
        variant = router_gemm_variant(*names, m)
    elif variant not in ("dot", "mma"):
        raise ValueError(f"variant must be 'dot', 'mma' or None; got {variant!r}")
    elif variant == "mma" and router_gemm_variant(*names, 1 << 30) != "mma":
        raise ValueError(f"variant='mma' needs x and weight both bf16 or both fp16; got {names[0]} x {names[1]}")
    if m == 0:
        return out
    bias_name = None if bias is None else bridge.dtype_name(bias.dtype)
    if config is None:
        kernel = router_gemm_kernel(*names, bridge.dtype_name(out_dtype), bias_name, m, h, e, variant, pdl,
                                    _num_sms(device.index))
    elif (config.x_dtype, config.w_dtype, config.out_dtype, config.bias_dtype) != (
            *names, bridge.dtype_name(out_dtype), bias_name):
        raise ValueError(f"config {config} does not match the call's dtypes")
    else:
        kernel = config
    bias_arg = bias if bias is not None else _no_bias(device)
    bridge.launch(bridge.compiled(kernel, device), device, x, weight, bias_arg, out)
    return out


NORM_X_DTYPES = (torch.bfloat16, torch.float16)
NORM_WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
NORM_GATE_DTYPES = (torch.bfloat16, torch.float32)
# H100, DeepSeek-V4-Pro: dot 5.35 us at M = 2 and 7.58 at M = 4; the tensor-core variant 5.69 at M = 8.
NORM_DOT_MAX_M = 2


@functools.lru_cache(maxsize=4096)
def norm_router_gemm_kernel(x_dtype: str, norm_dtype: str, w_dtype: str, out_dtype: str, m: int, h: int, e: int,
                            pdl: bool, num_sms: int = H100_SMS) -> NormRouterGemm:
    """Tensor cores (the router's mma tiling) above NORM_DOT_MAX_M tokens when x, the norm
    weight and the gate are all bf16; otherwise the dot variant with large expert tiles (32)
    over an 8-way cluster split, which measured on the H100 (7168 x 384, M = 1, 4, 16) beat
    smaller tiles and clusters by 0.5-6 us, the opposite of the plain router: every CTA also
    carries its x tiles and the norm's work. Each CTA keeps all of its x and norm-weight tiles
    resident; where they do not fit, H is split 8 ways, then fewer tokens share a CTA, then
    the dot variant's smaller token tiles are tried. ValueError if even one token's share of H
    cannot stay resident."""
    mma = x_dtype == norm_dtype == w_dtype == "bfloat16" and m > NORM_DOT_MAX_M
    for variant in ("mma", "dot") if mma else ("dot",):
        if variant == "mma":
            base = router_gemm_kernel(x_dtype, w_dtype, out_dtype, None, m, h, e, "mma", pdl, num_sms)
            e_tile, split_pref = base.e_tile, base.split_k
        else:
            e_tile, split_pref = min(32, -(-e // 4) * 4), 8
        m_tile = router_m_tile(variant, m)
        tiles = [t for t in (64, 32, 16, 8, 4, 2, 1) if t <= m_tile and (variant == "dot" or t >= 8)]
        for tile, split_cap in itertools.product(tiles, dict.fromkeys((split_pref, 8))):
            probe = NormRouterGemm(x_dtype, w_dtype, out_dtype, None, variant, e_tile, tile, 1, 1, pdl,
                                   norm_dtype=norm_dtype, k_slots=1)
            n_k = -(-h // probe.k_tile)
            split_k = max(s for s in (1, 2, 4, 8) if s <= min(n_k, split_cap))
            probe = dataclasses.replace(probe, split_k=split_k, k_slots=-(-n_k // split_k))
            stages = router_stages(probe, h)
            if stages >= 1:
                return dataclasses.replace(probe, stages=stages)
    raise ValueError(f"hidden size H={h} is too large for the fused kernel: a CTA's share of x does not fit "
                     "in shared memory (use the router GEMM on normed rows)")


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
    bridge.check_tensor("x", x, dtypes=NORM_X_DTYPES, shape=(None, None))
    m, h = x.shape
    bridge.check_tensor("norm_weight", norm_weight, dtypes=NORM_WEIGHT_DTYPES, shape=(h,))
    bridge.check_tensor("gate_weight", gate_weight, dtypes=NORM_GATE_DTYPES, shape=(None, h))
    e = gate_weight.shape[0]
    _check_router_sizes("gate_weight", h, e, out_dtype)
    if isinstance(eps, torch.Tensor) or not float(eps) >= 0.0:
        raise ValueError(f"eps must be a float >= 0; got {eps!r}")
    device = bridge.check_same_device(x=x, norm_weight=norm_weight, gate_weight=gate_weight)
    if max(m * h, e * h, m * e) > _MAX_ELEMENTS:
        raise ValueError(f"x, gate_weight or logits_out has more than {_MAX_ELEMENTS} elements")
    if normed_out is None:
        normed_out = torch.empty((m, h), dtype=x.dtype, device=device)
    else:
        bridge.check_tensor("normed_out", normed_out, dtypes=(x.dtype,), shape=(m, h))
        bridge.check_same_device(x=x, normed_out=normed_out)
    if logits_out is None:
        logits_out = torch.empty((m, e), dtype=out_dtype, device=device)
    else:
        bridge.check_tensor("logits_out", logits_out, dtypes=(out_dtype,), shape=(m, e))
        bridge.check_same_device(x=x, logits_out=logits_out)
        bridge.check_contiguous("logits_out", logits_out)
    dense = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight, "normed_out": normed_out}
    for name, t in dense.items():
        bridge.check_contiguous(name, t)
    _check_aligned(16, **dense)  # TMA loads, 16-byte stores of normed x
    inputs = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight}
    bridge.check_no_overlap("normed_out", normed_out, **inputs)
    bridge.check_no_overlap("logits_out", logits_out, normed_out=normed_out, **inputs)
    if m == 0:
        return normed_out, logits_out
    kernel = norm_router_gemm_kernel(bridge.dtype_name(x.dtype), bridge.dtype_name(norm_weight.dtype),
                                     bridge.dtype_name(gate_weight.dtype), bridge.dtype_name(out_dtype), m, h, e,
                                     pdl, _num_sms(device.index))
    bridge.launch(bridge.compiled(kernel, device), device, x, gate_weight, norm_weight.view(1, h), logits_out,
                  normed_out, float(eps))
    return normed_out, logits_out
