"""The dispatched ops as torch custom ops (``torch.ops.cute_kernels.*``), for torch.compile.

Each op is opaque to the compiler: its real implementation is the eager dispatcher, so the tier
choice (which depends on M) happens when the compiled graph runs, never when it is traced, and a
graph traced with a symbolic M serves every M. Fake implementations give the output shapes,
dtypes and strides, and check the arguments the way a call would. The ops allocate their outputs
and mutate nothing; ``out=`` arguments are handled outside them (see ``dispatch.ops``).
"""

from __future__ import annotations

import torch

from . import norm_router, router, silu_quant, topk


@torch.library.custom_op("cute_kernels::router_gemm", mutates_args=())
def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                out_dtype: torch.dtype) -> torch.Tensor:
    return router.run(x, weight, bias, out_dtype, None)


@router_gemm.register_fake
def _(x, weight, bias, out_dtype):
    router.check_args(x, weight, bias, out_dtype, None)
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)


@torch.library.custom_op("cute_kernels::norm_router_gemm", mutates_args=())
def norm_router_gemm(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor, eps: float,
                     out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return norm_router.run(x, norm_weight, gate_weight, eps, out_dtype, None, None)


@norm_router_gemm.register_fake
def _(x, norm_weight, gate_weight, eps, out_dtype):
    norm_router.check_args(x, norm_weight, gate_weight, eps, out_dtype, None, None)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(
        (x.shape[0], gate_weight.shape[0]), dtype=out_dtype)


@torch.library.custom_op("cute_kernels::silu_mul_quant_fp8", mutates_args=())
def silu_mul_quant_fp8(x: torch.Tensor, group_size: int, scale_ub: torch.Tensor | None, ue8m0: bool,
                       scale_layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    return silu_quant.run(x, group_size, scale_ub, ue8m0, scale_layout, None, None)


@silu_mul_quant_fp8.register_fake
def _(x, group_size, scale_ub, ue8m0, scale_layout):
    silu_quant.check_args(x, group_size, scale_ub, ue8m0, scale_layout, None, None)
    t, h = x.shape[0], x.shape[1] // 2
    g = h // group_size
    strides = (g, 1) if scale_layout == "row" else (1, t)
    return (x.new_empty((t, h), dtype=torch.float8_e4m3fn),
            x.new_empty_strided((t, g), strides, dtype=torch.float32))


@torch.library.custom_op("cute_kernels::pack_topk", mutates_args=())
def pack_topk(ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return topk.run(ids, weights, None)


@pack_topk.register_fake
def _(ids, weights):
    topk.check_args(ids, weights, None)
    return ids.new_empty(ids.shape, dtype=torch.int32)
