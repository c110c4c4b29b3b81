"""Public ops: validate through the bridge and the kernel family's limits, then launch through
the problem's launcher.

Each op checks, in order, its tensors' types, dtypes, ranks and sizes (``checks.check_tensor``),
its options, its family's limits (``supports``: ValueError with that reason), the device, the
layout, then the row limit; so everything but the device and layout fails the same way on a
machine without a GPU. A launcher (one per problem: dtypes, sizes but M, device) checks only the
outputs, keeps each specialisation's compiled function and launches; the dispatcher's CuTe tiers
call it directly, their cached plan already holding everything else an op checks.
"""

from __future__ import annotations

import functools

import torch

from . import bridge
from .checks import check_tensor, dtype_name, require, torch_dtypes
from .kernels import pack_topk as topk_family
from .kernels import router_gemm as router_family
from .kernels import silu_mul_quant_fp8 as silu_family
from .kernels.router_gemm import RouterGemm
from .kernels.router_gemm.config import WORKSPACE_COUNTERS
from .routing import RoutingConfig

ALIGN = 16  # bytes: TMA and 16-byte vector accesses need data pointers aligned to this


@functools.lru_cache(maxsize=None)
def _unread(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One element for a slot the kernel was compiled not to read (no bias, no scale cap, no
    split-K workspace)."""
    return torch.zeros((1,), dtype=dtype, device=device)


def _check_supported(reason: str | None) -> None:
    require(reason is None, reason)


def _check_rows(name: str, rows: int, limit: int) -> None:
    require(rows <= limit, f"{name} has {rows} rows; at most {limit} are supported at these sizes (the kernels "
                           "index with 32-bit integers)")


# -- pack_topk ------------------------------------------------------------------------------------
def pack_topk(ids: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
              pdl: bool = True) -> torch.Tensor:
    """Packs top-k expert ids and routing weights into int32: ``(id << 16) | bits(bf16(weight))``.

    ids: int32/int64 [T, k]; weights: float32/bfloat16 [T, k]; out: int32 [T, k] (allocated if
    None). All contiguous, on one CUDA device (sm_90+). Only the low 16 bits of an id survive.
    ``pdl``: launch with programmatic dependent launch (overlaps the previous kernel's tail).
    Semantics: ``cute_kernels.reference.pack_topk``.
    """
    t, k = check_tensor("ids", ids, torch_dtypes(topk_family.IDS_DTYPES), (None, None))
    check_tensor("weights", weights, torch_dtypes(topk_family.WEIGHTS_DTYPES), (t, k))
    problem = topk_family.Problem(dtype_name(ids.dtype), dtype_name(weights.dtype), k)
    _check_supported(topk_family.supports(problem))
    device = bridge.check_same_device(ids=ids, weights=weights)
    _check_rows("ids", t, topk_family.max_rows(problem))
    bridge.check_contiguous("ids", ids)
    bridge.check_contiguous("weights", weights)
    return pack_topk_launcher(ids.dtype, weights.dtype, k, device, pdl)(t, ids, weights, out)


@functools.lru_cache(maxsize=256)
def pack_topk_launcher(ids_dtype: torch.dtype, weights_dtype: torch.dtype, k: int, device: torch.device, pdl: bool):
    """``launch(T, ids, weights, out) -> out`` for calls already checked to be this problem: ids
    and weights [T, k] of these dtypes, contiguous, on ``device``, T within ``max_rows``. Only
    ``out`` is checked (allocated when None); the pointers' alignment picks the specialisation."""
    names = dtype_name(ids_dtype), dtype_name(weights_dtype)
    launch_kernel = bridge.Launcher(lambda align: topk_family.pick(*names, k, align, pdl), device).launch

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


# -- silu_mul_quant_fp8 ---------------------------------------------------------------------------
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
    t, width = check_tensor("x", x, torch_dtypes(silu_family.X_DTYPES), (None, None))
    require(width % 2 == 0, f"x must have an even width ([gate | up]); got shape {tuple(x.shape)}")
    problem = silu_family.Problem(dtype_name(x.dtype), width // 2, group_size, scale_layout)
    _check_supported(silu_family.supports(problem))
    if scale_ub is not None and not (isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == torch.float32
                                     and scale_ub.numel() == 1):
        got = (f"{scale_ub.dtype} {tuple(scale_ub.shape)}" if isinstance(scale_ub, torch.Tensor)
               else type(scale_ub).__name__)
        raise TypeError(f"scale_ub must be a one-element float32 tensor; got {got}")
    device = bridge.check_same_device(x=x)
    bridge.check_contiguous("x", x)
    bridge.check_aligned(ALIGN, x=x)
    if scale_ub is not None:
        bridge.check_same_device(x=x, scale_ub=scale_ub)
    _check_rows("x", t, silu_family.max_rows(problem))
    launch = silu_mul_quant_launcher(x.dtype, problem.hidden, group_size, bool(ue8m0), scale_ub is not None,
                                     scale_layout, device, pdl)
    return launch(t, x, group_size, scale_ub, ue8m0, scale_layout, out, scales)


@functools.lru_cache(maxsize=256)
def silu_mul_quant_launcher(x_dtype: torch.dtype, h: int, group_size: int, ue8m0: bool, has_scale_ub: bool,
                            scale_layout: str, device: torch.device, pdl: bool):
    """``launch(T, x, group_size, scale_ub, ue8m0, scale_layout, out, scales) -> (out, scales)``
    for calls already checked to be this problem: x [T, 2H] of this dtype, contiguous and
    16-byte aligned, scale_ub (given exactly when ``has_scale_ub``) a one-element fp32 tensor,
    all on ``device``, T within ``max_rows``. Only ``out`` and ``scales`` are checked (allocated
    when None)."""
    kernel = silu_family.pick(dtype_name(x_dtype), h, group_size, ue8m0, has_scale_ub, scale_layout, pdl)
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
            bridge.check_aligned(8, out=out)
        s_strides = (g, 1) if scale_layout == "row" else (1, t)
        if scales is None:
            scales = x.new_empty_strided((t, g), s_strides, dtype=torch.float32)
        else:
            bridge.check_output("scales", scales, dtype=torch.float32, shape=(t, g), device=device, x=x, out=out,
                                scale_ub=scale_ub)
            bridge.check_strides("scales", scales, s_strides, f"scale_layout={scale_layout!r}")
        if t:
            launch_kernel(None, x, out, scales, no_ub if scale_ub is None else scale_ub.as_strided((1,), (1,)))
        return out, scales

    return launch


# -- router_gemm ----------------------------------------------------------------------------------
def _check_out_dtype(out_dtype) -> None:
    require(out_dtype in torch_dtypes(router_family.tiling.OUT_DTYPES),
            f"out_dtype must be torch.float32 or torch.bfloat16; got {out_dtype}", TypeError)


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None, pdl: bool = True,
                variant: str | None = None, config: RouterGemm | None = None) -> torch.Tensor:
    """Router logits ``x @ weight.T (+ bias)`` with fp32 accumulation, rounded once to out_dtype.

    x: [M, H] bf16/fp16/fp32; weight: [E, H] bf16/fp16/fp32 (fp32 weights are used as fp32:
    no TF32, nothing rounded to bf16; on tensor cores each enters as three bf16 parts that sum
    to it exactly); bias: [E] bf16/fp16/fp32 or None; out: [M, E] fp32 or bf16 (allocated if
    None). H must be a positive multiple of 8 (up to ``kernels.router_gemm.tiling.MAX_H``); x
    and weight contiguous and 16-byte aligned (TMA). Any M >= 0 and E >= 1. ``variant``: "dot"
    (CUDA cores) or "mma" (tensor cores: x and weight both bf16 or both fp16, or bf16 x with
    fp32 weights; H up to ``mma_max_h``); None picks by M.
    ``pdl``: launch with programmatic dependent launch (the weight stream starts before the
    previous kernel has finished). ``config``: an explicit ``RouterGemm`` specialisation (for
    tuning sweeps) instead of the heuristic's; its dtypes must match the call's.
    Semantics: ``cute_kernels.reference.router_gemm``.
    """
    floats = torch_dtypes(router_family.tiling.FLOATS)
    m, h = check_tensor("x", x, floats, (None, None))
    e, _ = check_tensor("weight", weight, floats, (None, h))
    _check_out_dtype(out_dtype)
    require(variant in (None, "dot", "mma"), f"variant must be 'dot', 'mma' or None; got {variant!r}")
    problem = router_family.Problem(dtype_name(x.dtype), dtype_name(weight.dtype), None, dtype_name(out_dtype), h, e)
    _check_supported(router_family.supports(problem, variant))
    device = bridge.check_same_device(x=x, weight=weight)
    if bias is not None:
        check_tensor("bias", bias, floats, (e,))
        bridge.check_same_device(x=x, bias=bias)
        bridge.check_contiguous("bias", bias)
    for name, t in (("x", x), ("weight", weight)):
        bridge.check_contiguous(name, t)
    bridge.check_aligned(ALIGN, x=x, weight=weight)  # TMA
    _check_rows("x", m, router_family.max_rows(h, e))
    if variant is None:
        variant = router_family.variant_for(problem.x_dtype, problem.w_dtype, m, h)
    bias_dtype = None if bias is None else bias.dtype
    if config is not None:
        require((config.x_dtype, config.w_dtype, config.out_dtype, config.bias_dtype) == (
            problem.x_dtype, problem.w_dtype, problem.out_dtype, bias_dtype and dtype_name(bias_dtype)),
            f"config {config} does not match the call's dtypes")
        require(config.holds_share(h), f"config {config}: its {config.stages} stages do not hold a CTA's "
                                       f"{config.k_tiles_per_cta(h)} k tiles of H={h}")
    launch = router_gemm_launcher(x.dtype, weight.dtype, bias_dtype, out_dtype, h, e, variant, device, pdl, config)
    return launch(m, x, weight, bias, out_dtype, out)


@functools.lru_cache(maxsize=256)
def router_gemm_launcher(x_dtype: torch.dtype, w_dtype: torch.dtype, bias_dtype: torch.dtype | None,
                         out_dtype: torch.dtype, h: int, e: int, variant: str, device: torch.device, pdl: bool,
                         config: RouterGemm | None = None):
    """``launch(M, x, weight, bias, out_dtype, out) -> out`` for calls already checked to be this
    problem: x [M, H] and weight [E, H] of these dtypes, contiguous and 16-byte aligned, bias
    None (``bias_dtype`` None) or contiguous [E], all on ``device``, M within ``max_rows``. Only
    ``out`` is checked (allocated when None); each M's specialisation is looked up once
    (``config``: that one for every M)."""
    names = [dtype_name(d) for d in (x_dtype, w_dtype, out_dtype)]
    bias_name = None if bias_dtype is None else dtype_name(bias_dtype)
    num_sms = bridge.num_sms(device.index)

    def kernel_of(m):
        return config if config is not None else router_family.pick(*names, bias_name, m, h, e, variant, pdl,
                                                                    num_sms)

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


# -- norm_router_gemm -----------------------------------------------------------------------------
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
    Semantics: ``cute_kernels.reference.norm_router_gemm``.
    """
    tiling = router_family.tiling
    m, h = check_tensor("x", x, torch_dtypes(tiling.NORM_X_DTYPES), (None, None))
    check_tensor("norm_weight", norm_weight, torch_dtypes(tiling.FLOATS), (h,))
    e, _ = check_tensor("gate_weight", gate_weight, torch_dtypes(tiling.NORM_GATE_DTYPES), (None, h))
    _check_out_dtype(out_dtype)
    require(not isinstance(eps, torch.Tensor) and float(eps) >= 0.0, f"eps must be a float >= 0; got {eps!r}")
    problem = router_family.NormProblem(dtype_name(x.dtype), dtype_name(norm_weight.dtype),
                                        dtype_name(gate_weight.dtype), dtype_name(out_dtype), h, e)
    _check_supported(router_family.supports_norm(problem))
    device = bridge.check_same_device(x=x, norm_weight=norm_weight, gate_weight=gate_weight)
    inputs = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight}
    for name, t in inputs.items():
        bridge.check_contiguous(name, t)
    bridge.check_aligned(ALIGN, **inputs)  # TMA loads
    _check_rows("x", m, router_family.max_rows(h, e))
    launch = norm_router_gemm_launcher(x.dtype, norm_weight.dtype, gate_weight.dtype, out_dtype, h, e, device, pdl)
    return launch(m, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)


@functools.lru_cache(maxsize=256)
def norm_router_gemm_launcher(x_dtype: torch.dtype, norm_dtype: torch.dtype, gate_dtype: torch.dtype,
                              out_dtype: torch.dtype, h: int, e: int, device: torch.device, pdl: bool):
    """``launch(M, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out) ->
    (normed_out, logits_out)`` for calls already checked to be this problem: x [M, H],
    norm_weight [H] and gate_weight [E, H] of these dtypes, contiguous and 16-byte aligned, on
    ``device``, eps >= 0, M within ``max_rows``. Only the outputs are checked (allocated when
    None); each M's specialisation is looked up once."""
    names = [dtype_name(d) for d in (x_dtype, norm_dtype, gate_dtype, out_dtype)]
    num_sms = bridge.num_sms(device.index)
    launch_kernel = bridge.Launcher(lambda m: router_family.pick_norm(*names, m, h, e, pdl, num_sms), device).launch

    def launch(m, x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
        if normed_out is None:
            normed_out = x.new_empty(m, h)
        else:
            bridge.check_output("normed_out", normed_out, dtype=x.dtype, shape=(m, h), device=device, x=x,
                                norm_weight=norm_weight, gate_weight=gate_weight)
            bridge.check_contiguous("normed_out", normed_out)
            bridge.check_aligned(ALIGN, normed_out=normed_out)  # 16-byte stores
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


# -- route, router_topk, norm_router_topk ---------------------------------------------------------
def _check_routing(routing, e: int) -> None:
    require(isinstance(routing, RoutingConfig), f"routing must be a cute_kernels.routing.RoutingConfig; got "
                                                f"{type(routing).__name__}", TypeError)
    _check_supported(router_family.tiling.supports_selection(routing, e))


def _check_correction_bias(correction_bias, routing, e: int, device) -> None:
    if not routing.correction_bias:
        require(correction_bias is None, "correction_bias was given, but routing.correction_bias is False")
        return
    require(correction_bias is not None, "correction_bias is required: routing.correction_bias is True")
    check_tensor("correction_bias", correction_bias, (torch.float32,), (e,))
    require(correction_bias.device == device, f"correction_bias is on {correction_bias.device} but the inputs are on "
                                              f"{device}; all tensors must be on one CUDA device")
    bridge.check_contiguous("correction_bias", correction_bias)


def _selection_outputs(m: int, k: int, e: int, packed: bool, device, out_weights, out_ids, logits_out, inputs: dict):
    """The selection's outputs, checked or allocated: (weights or a placeholder when packed, ids or
    the packed values, logits_out or None)."""
    if packed:
        require(out_weights is None, "out_weights was given, but packed=True returns one int32 tensor (out_ids)")
        weights = _unread(device)
    elif out_weights is None:
        weights = torch.empty(m, k, dtype=torch.float32, device=device)
    else:
        bridge.check_output("out_weights", out_weights, dtype=torch.float32, shape=(m, k), device=device, **inputs)
        bridge.check_contiguous("out_weights", out_weights)
        weights = out_weights
    if out_ids is None:
        ids = torch.empty(m, k, dtype=torch.int32, device=device)
    else:
        bridge.check_output("out_ids", out_ids, dtype=torch.int32, shape=(m, k), device=device, weights=weights,
                            **inputs)
        bridge.check_contiguous("out_ids", out_ids)
        ids = out_ids
    if logits_out is not None:
        bridge.check_output("logits_out", logits_out, dtype=torch.float32, shape=(m, e), device=device,
                            weights=weights, ids=ids, **inputs)
        bridge.check_contiguous("logits_out", logits_out)
        bridge.check_aligned(ALIGN, logits_out=logits_out)
    return weights, ids


def _selected(weights, ids, packed: bool):
    return ids if packed else (weights, ids)


class _LogitsRoom:
    """Where a fused kernel stages fp32 logits the caller did not ask for: past the arrival
    counters of the split-K workspace of the launch's stream (``bridge.workspace``)."""

    def __init__(self):
        self.views = {}  # id(workspace) -> (workspace, its fp32 view past the counters)

    def __call__(self, workspace: torch.Tensor) -> torch.Tensor:
        hit = self.views.get(id(workspace))
        if hit is None or hit[0] is not workspace:
            if len(self.views) >= bridge.Launcher.MAX_KEYS:
                self.views.clear()
            hit = self.views[id(workspace)] = (workspace, workspace[WORKSPACE_COUNTERS:].view(torch.float32))
        return hit[1]


def route(logits: torch.Tensor, *, routing: RoutingConfig, correction_bias: torch.Tensor | None = None,
          out_weights: torch.Tensor | None = None, out_ids: torch.Tensor | None = None, packed: bool = False,
          pdl: bool = True):
    """Each token's top-k experts from fp32 router logits: ``(weights fp32 [M, k], ids int32 [M, k])``,
    or with ``packed=True`` the int32 [M, k] of ``pack_topk``.

    logits: fp32 [M, E], contiguous; ``routing`` a ``RoutingConfig`` valid for E (E <= 1024, at
    most 32 groups); ``correction_bias`` fp32 [E], given exactly when ``routing.correction_bias``.
    ``out_weights`` / ``out_ids`` (the packed values when packed) are allocated when None.
    Semantics: ``cute_kernels.reference.route``."""
    m, e = check_tensor("logits", logits, (torch.float32,), (None, None))
    _check_routing(routing, e)
    device = bridge.check_same_device(logits=logits)
    _check_correction_bias(correction_bias, routing, e, device)
    bridge.check_contiguous("logits", logits)
    _check_rows("logits", m, router_family.max_rows(e, e))
    return route_launcher(e, routing, bool(packed), device, pdl)(m, logits, correction_bias, out_weights, out_ids)


@functools.lru_cache(maxsize=256)
def route_launcher(e: int, routing: RoutingConfig, packed: bool, device: torch.device, pdl: bool):
    """``launch(M, logits, correction_bias, out_weights, out_ids)`` for calls already checked to
    be this problem; only the outputs are checked (allocated when None)."""
    kernel = router_family.pick_route(e, routing, packed, pdl)
    launch_kernel = bridge.Launcher(lambda _: kernel, device).launch
    no_bias, k = _unread(device), routing.top_k

    def launch(m, logits, correction_bias, out_weights, out_ids):
        weights, ids = _selection_outputs(m, k, e, packed, device, out_weights, out_ids, None, {"logits": logits})
        if m:
            launch_kernel(None, logits, no_bias if correction_bias is None else correction_bias, weights, ids,
                          routing.scaling)
        return _selected(weights, ids, packed)

    return launch


def router_topk(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, routing: RoutingConfig,
                correction_bias: torch.Tensor | None = None, out_weights: torch.Tensor | None = None,
                out_ids: torch.Tensor | None = None, logits_out: torch.Tensor | None = None, packed: bool = False,
                pdl: bool = True):
    """The router GEMM, scoring and top-k in one kernel: ``(weights fp32 [M, k], ids int32 [M, k])``,
    or with ``packed=True`` the int32 [M, k] of ``pack_topk``.

    x, weight, bias: as ``router_gemm`` (the logits are fp32); ``routing``, ``correction_bias``,
    ``out_weights``, ``out_ids``: as ``route``. ``logits_out`` (fp32 [M, E], contiguous, 16-byte
    aligned): where the logits go, written only when given (otherwise they stay in a workspace,
    in L2). ``pdl``: programmatic dependent launch (the weights stream before the previous
    kernel has finished). Semantics: ``cute_kernels.reference.router_topk``."""
    floats = torch_dtypes(router_family.tiling.FLOATS)
    m, h = check_tensor("x", x, floats, (None, None))
    e, _ = check_tensor("weight", weight, floats, (None, h))
    _check_routing(routing, e)
    problem = router_family.Problem(dtype_name(x.dtype), dtype_name(weight.dtype), None, "float32", h, e)
    _check_supported(router_family.supports(problem))
    device = bridge.check_same_device(x=x, weight=weight)
    if bias is not None:
        check_tensor("bias", bias, floats, (e,))
        bridge.check_same_device(x=x, bias=bias)
        bridge.check_contiguous("bias", bias)
    _check_correction_bias(correction_bias, routing, e, device)
    for name, t in (("x", x), ("weight", weight)):
        bridge.check_contiguous(name, t)
    bridge.check_aligned(ALIGN, x=x, weight=weight)  # TMA
    _check_rows("x", m, router_family.max_rows(h, e))
    launch = router_topk_launcher(x.dtype, weight.dtype, None if bias is None else bias.dtype, h, e, routing,
                                  bool(packed), device, pdl)
    return launch(m, x, weight, bias, correction_bias, out_weights, out_ids, logits_out)


def _topk_launch(kernel_of, device, e, routing, packed):
    """What both fused launchers share: the workspace, the logits' room, the outputs."""
    launch_kernel = bridge.Launcher(kernel_of, device).launch
    no_bias, room, k = _unread(device), _LogitsRoom(), routing.top_k

    def launch(m, args, correction_bias, out_weights, out_ids, logits_out, inputs):
        weights, ids = _selection_outputs(m, k, e, packed, device, out_weights, out_ids, logits_out, inputs)
        if m:
            ws = bridge.workspace(device, WORKSPACE_COUNTERS + (0 if logits_out is not None else m * e))
            logits = logits_out.view(-1) if logits_out is not None else room(ws)
            launch_kernel(m, *args, logits, ws, no_bias if correction_bias is None else correction_bias, weights,
                          ids, routing.scaling)
        return weights, ids

    return launch


@functools.lru_cache(maxsize=256)
def router_topk_launcher(x_dtype: torch.dtype, w_dtype: torch.dtype, bias_dtype: torch.dtype | None, h: int, e: int,
                         routing: RoutingConfig, packed: bool, device: torch.device, pdl: bool):
    """``launch(M, x, weight, bias, correction_bias, out_weights, out_ids, logits_out)`` for calls
    already checked to be this problem (as ``router_gemm_launcher``'s, plus the correction bias);
    only the outputs are checked (allocated when None)."""
    names = dtype_name(x_dtype), dtype_name(w_dtype)
    bias_name = None if bias_dtype is None else dtype_name(bias_dtype)
    num_sms = bridge.num_sms(device.index)
    run = _topk_launch(lambda m: router_family.pick_topk(*names, bias_name, m, h, e, routing, packed, pdl, num_sms),
                       device, e, routing, packed)
    no_bias = _unread(device)

    def launch(m, x, weight, bias, correction_bias, out_weights, out_ids, logits_out):
        weights, ids = run(m, (x, weight, no_bias if bias is None else bias), correction_bias, out_weights, out_ids,
                           logits_out, {"x": x, "weight": weight, "bias": bias})
        return _selected(weights, ids, packed)

    return launch


def norm_router_topk(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor, eps: float = 1e-6, *,
                     routing: RoutingConfig, correction_bias: torch.Tensor | None = None,
                     normed_out: torch.Tensor | None = None, out_weights: torch.Tensor | None = None,
                     out_ids: torch.Tensor | None = None, logits_out: torch.Tensor | None = None,
                     packed: bool = False, pdl: bool = True):
    """RMSNorm, the router GEMM, scoring and top-k in one kernel: ``(normed_x, weights, ids)``, or
    ``(normed_x, packed)`` with ``packed=True``.

    x, norm_weight, gate_weight, eps, normed_out: as ``norm_router_gemm`` (the logits are fp32);
    the rest as ``router_topk``. Semantics: ``cute_kernels.reference.norm_router_topk``."""
    tiling = router_family.tiling
    m, h = check_tensor("x", x, torch_dtypes(tiling.NORM_X_DTYPES), (None, None))
    check_tensor("norm_weight", norm_weight, torch_dtypes(tiling.FLOATS), (h,))
    e, _ = check_tensor("gate_weight", gate_weight, torch_dtypes(tiling.NORM_GATE_DTYPES), (None, h))
    require(not isinstance(eps, torch.Tensor) and float(eps) >= 0.0, f"eps must be a float >= 0; got {eps!r}")
    _check_routing(routing, e)
    problem = router_family.NormProblem(dtype_name(x.dtype), dtype_name(norm_weight.dtype),
                                        dtype_name(gate_weight.dtype), "float32", h, e)
    _check_supported(router_family.supports_norm(problem))
    device = bridge.check_same_device(x=x, norm_weight=norm_weight, gate_weight=gate_weight)
    _check_correction_bias(correction_bias, routing, e, device)
    inputs = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight}
    for name, t in inputs.items():
        bridge.check_contiguous(name, t)
    bridge.check_aligned(ALIGN, **inputs)  # TMA loads
    _check_rows("x", m, router_family.max_rows(h, e))
    launch = norm_router_topk_launcher(x.dtype, norm_weight.dtype, gate_weight.dtype, h, e, routing, bool(packed),
                                       device, pdl)
    return launch(m, x, norm_weight, gate_weight, eps, correction_bias, normed_out, out_weights, out_ids, logits_out)


@functools.lru_cache(maxsize=256)
def norm_router_topk_launcher(x_dtype: torch.dtype, norm_dtype: torch.dtype, gate_dtype: torch.dtype, h: int, e: int,
                              routing: RoutingConfig, packed: bool, device: torch.device, pdl: bool):
    """``launch(M, x, norm_weight, gate_weight, eps, correction_bias, normed_out, out_weights,
    out_ids, logits_out)`` for calls already checked to be this problem (as
    ``norm_router_gemm_launcher``'s, plus the correction bias); only the outputs are checked."""
    names = [dtype_name(d) for d in (x_dtype, norm_dtype, gate_dtype)]
    num_sms = bridge.num_sms(device.index)
    run = _topk_launch(lambda m: router_family.pick_norm_topk(*names, m, h, e, routing, packed, pdl, num_sms),
                       device, e, routing, packed)

    def launch(m, x, norm_weight, gate_weight, eps, correction_bias, normed_out, out_weights, out_ids, logits_out):
        inputs = {"x": x, "norm_weight": norm_weight, "gate_weight": gate_weight}
        if normed_out is None:
            normed_out = x.new_empty(m, h)
        else:
            bridge.check_output("normed_out", normed_out, dtype=x.dtype, shape=(m, h), device=device, **inputs)
            bridge.check_contiguous("normed_out", normed_out)
            bridge.check_aligned(ALIGN, normed_out=normed_out)  # 16-byte stores
        weights, ids = run(m, (x, gate_weight, norm_weight.view(1, h), normed_out, float(eps)), correction_bias,
                           out_weights, out_ids, logits_out, {**inputs, "normed_out": normed_out})
        return (normed_out, ids) if packed else (normed_out, weights, ids)

    return launch
