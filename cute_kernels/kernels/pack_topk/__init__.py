"""Top-k id/weight packing (``cute_kernels.pack_topk``): configuration and limits here, the
kernel in ``kernel.py`` (imported to compile only)."""

from .config import IDS_DTYPES, WEIGHTS_DTYPES, PackTopk, Problem, max_rows, pick, preset_configs, supports, variants

__all__ = ["IDS_DTYPES", "WEIGHTS_DTYPES", "PackTopk", "Problem", "max_rows", "pick", "preset_configs", "supports",
           "variants"]
