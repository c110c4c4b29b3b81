"""SiLU * Mul + FP8 group quantisation (``cute_kernels.silu_mul_quant_fp8``): configuration and
limits here, the kernel in ``kernel.py`` (imported to compile only)."""

from .config import (GROUP_SIZES, SCALE_LAYOUTS, X_DTYPES, Problem, SiluMulQuantFp8, max_rows, pick,
                     preset_configs, preset_group_size, supports, variants)

__all__ = ["GROUP_SIZES", "SCALE_LAYOUTS", "X_DTYPES", "Problem", "SiluMulQuantFp8", "max_rows", "pick",
           "preset_configs", "preset_group_size", "supports", "variants"]
