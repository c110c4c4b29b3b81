"""The public dispatched ops: same signatures and semantics as the ``cute_kernels`` ops, any device.

Eagerly a call goes straight to the dispatcher (no custom-op boundary): the problem key, the plan,
and for a CuTe tier the problem's launcher, which checks only the outputs (host cost per call:
``perf/bench_host_overhead.py``); under torch.compile it becomes the custom op of
``dispatch.library``. ``out=`` works in both: compiled, the op allocates and the result is copied
into ``out`` (the compiler owns the memory plan, so that costs one copy).
"""

from __future__ import annotations

import torch

from . import library, norm_router, router, silu_quant, topk
from .torch_math import finish

_is_compiling = torch.compiler.is_compiling


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """Router logits ``x @ weight.T (+ bias)`` rounded once to ``out_dtype`` (fp32 or bf16).

    x [M, H] bf16/fp16/fp32, weight [E, H] bf16/fp16/fp32, bias [E] or None, out [M, E].
    Semantics: ``cute_kernels.reference.router_gemm`` (fp16 weights use the same formula)."""
    if _is_compiling():
        logits = library.router_gemm(x, weight, bias, out_dtype)
        return logits if out is None else finish(logits, out_dtype, out, "out")
    return router.run(x, weight, bias, out_dtype, out)


def norm_router_gemm(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor,
                     eps: float = 1e-6, *, out_dtype: torch.dtype = torch.float32,
                     normed_out: torch.Tensor | None = None, logits_out: torch.Tensor | None = None):
    """RMSNorm then the router GEMM: ``(normed_x, logits)``.

    x [M, H] bf16/fp16, norm_weight [H], gate_weight [E, H] bf16/fp16/fp32. The logits use the
    unrounded normed rows. Semantics: ``cute_kernels.reference.rmsnorm_router_gemm``."""
    if _is_compiling():
        normed, logits = library.norm_router_gemm(x, norm_weight, gate_weight, float(eps), out_dtype)
        if normed_out is not None:
            normed = finish(normed, x.dtype, normed_out, "normed_out")
        if logits_out is not None:
            logits = finish(logits, out_dtype, logits_out, "logits_out")
        return normed, logits
    return norm_router.run(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)


def silu_mul_quant_fp8(x: torch.Tensor, group_size: int = 128, *, scale_ub: torch.Tensor | None = None,
                       ue8m0: bool = False, scale_layout: str = "row", out: torch.Tensor | None = None,
                       scales: torch.Tensor | None = None):
    """``silu(gate) * up`` quantised to float8_e4m3fn per group: ``(q [T, H], scales [T, H // group])``.

    x [T, 2H] bf16/fp16 = [gate | up]; scales row-major, or strides (1, T) for
    ``scale_layout="col"``. Semantics: ``cute_kernels.reference.silu_mul_quant_fp8``."""
    if _is_compiling():
        q, s = library.silu_mul_quant_fp8(x, group_size, scale_ub, ue8m0, scale_layout)
        if out is not None:
            q = finish(q, q.dtype, out, "out")
        if scales is not None:
            s = finish(s, s.dtype, scales, "scales")
        return q, s
    return silu_quant.run(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)


def pack_topk(ids: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(id << 16) | bits(bf16(weight))`` as int32 [T, k].

    ids int32/int64 [T, k], weights fp32/bf16 [T, k]. Semantics: ``cute_kernels.reference.pack_topk``."""
    if _is_compiling():
        packed = library.pack_topk(ids, weights)
        return packed if out is None else finish(packed, torch.int32, out, "out")
    return topk.run(ids, weights, out)
