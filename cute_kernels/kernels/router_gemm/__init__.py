"""The router GEMM family (``cute_kernels.router_gemm`` and ``cute_kernels.norm_router_gemm``):
plus the routing step fused after either (``router_topk``, ``norm_router_topk``) and the
selection alone (``route``): configurations (``config``) and their tiling and limits
(``tiling``) here; the kernel, split by role, in ``kernel`` (CTA set-up and the TMA producer),
``consumers`` (dot and tensor-core consumer warps), ``reduction`` (the split-K epilogue) and
``selection`` (scoring and top-k), imported to compile only."""

from .config import MMA_DTYPES, NormRouterGemm, NormRouterTopk, Route, RouterGemm, RouterTopk
from .tiling import (NormProblem, Problem, max_rows, mma_dtypes, mma_max_h, pick, pick_norm, pick_norm_topk,
                     pick_route, pick_topk, preset_configs, supports, supports_norm, supports_selection, variant_for,
                     variants)

__all__ = ["MMA_DTYPES", "NormProblem", "NormRouterGemm", "NormRouterTopk", "Problem", "Route", "RouterGemm",
           "RouterTopk", "max_rows", "mma_dtypes", "mma_max_h", "pick", "pick_norm", "pick_norm_topk", "pick_route",
           "pick_topk", "preset_configs", "supports", "supports_norm", "supports_selection", "variant_for",
           "variants"]
