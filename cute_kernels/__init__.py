"""cute-kernels: CuTe DSL kernels for the small, latency-bound ops around MoE routing.

Ops take torch tensors on an sm_90+ GPU and launch on torch's current stream. Their exact
semantics are the plain-torch functions of ``cute_kernels.reference``.
"""

from . import presets, reference
from .ops import norm_router_gemm, pack_topk, router_gemm, silu_mul_quant_fp8

__version__ = "0.1.0"
__all__ = ["norm_router_gemm", "pack_topk", "presets", "reference", "router_gemm", "silu_mul_quant_fp8"]
