"""Which kernel specialisations the ops need: per model preset, and every variant (for CI).

The ops choose specialisations at call time from dtypes, shapes and pointer alignment; this
module lists the ones a deployment will hit so they can be compiled ahead of use (demo, warmup,
CI). Fresh torch allocations are 256-byte aligned, hence ``align_bytes=16`` for presets.
"""

from __future__ import annotations

import itertools

from .ops import pack_topk_kernel
from .presets import Preset

TOPK_IDS_DTYPES = ("int32", "int64")
TOPK_WEIGHTS_DTYPES = ("float32", "bfloat16")


def preset_kernels(preset: Preset, pdl: bool = True) -> list:
    return [pack_topk_kernel(i, w, preset.top_k, 16, pdl)
            for i, w in itertools.product(TOPK_IDS_DTYPES, TOPK_WEIGHTS_DTYPES)]


def all_variants() -> list:
    """Every code path of every kernel: each vector width, dtype pair and PDL setting."""
    kernels = set()
    for ids, w, (k, align), pdl in itertools.product(
        TOPK_IDS_DTYPES, TOPK_WEIGHTS_DTYPES, ((8, 16), (4, 16), (8, 8), (6, 16), (8, 4), (1, 16)), (True, False)
    ):
        kernels.add(pack_topk_kernel(ids, w, k, align, pdl))
    return sorted(kernels, key=repr)
