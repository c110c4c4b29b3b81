"""The router GEMM family (``cute_kernels.router_gemm`` and ``cute_kernels.norm_router_gemm``):
configurations (``config``) and their tiling and limits (``tiling``) here; the kernel, split by
role, in ``kernel`` (CTA set-up and the TMA producer), ``consumers`` (dot and tensor-core
consumer warps) and ``reduction`` (the split-K epilogue), imported to compile only."""

from .config import MMA_DTYPES, NormRouterGemm, RouterGemm
from .tiling import (NormProblem, Problem, max_rows, mma_dtypes, mma_max_h, pick, pick_norm, preset_configs,
                     supports, supports_norm, variant_for, variants)

__all__ = ["MMA_DTYPES", "NormProblem", "NormRouterGemm", "Problem", "RouterGemm", "max_rows", "mma_dtypes",
           "mma_max_h", "pick", "pick_norm", "preset_configs", "supports", "supports_norm", "variant_for", "variants"]
