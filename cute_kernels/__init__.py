"""cute-kernels: CuTe DSL kernels for the small, latency-bound ops around MoE routing.

Ops take torch tensors on an sm_90+ GPU and launch on torch's current stream. Their exact
semantics are the plain-torch functions of ``cute_kernels.reference``.
"""

from . import presets, reference
from .ops import norm_router_gemm, norm_router_topk, pack_topk, route, router_gemm, router_topk, silu_mul_quant_fp8
from .routing import RoutingConfig

__version__ = "0.1.0"
__all__ = ["RoutingConfig", "norm_router_gemm", "norm_router_topk", "pack_topk", "presets", "reference", "route",
           "router_gemm", "router_topk", "silu_mul_quant_fp8"]
