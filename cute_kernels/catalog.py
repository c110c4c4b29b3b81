"""Which kernel specialisations the ops need: per model preset, and every variant (for CI).

The ops choose specialisations at call time from dtypes, shapes and pointer alignment; this
module lists the ones a deployment will hit so they can be compiled ahead of use (demo, warmup,
CI). Fresh torch allocations are 256-byte aligned, hence ``align_bytes=16`` for presets.
"""

from __future__ import annotations

import dataclasses
import itertools

from .ops import (norm_router_gemm_kernel, pack_topk_kernel, router_gemm_kernel, router_gemm_variant,
                  silu_mul_quant_kernel)
from .presets import Preset

ROUTER_M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # one per M bucket of either variant
NORM_ROUTER_M_VALUES = (1, 2, 4, 8, 16, 32, 64)  # the fused kernel's M buckets (dot to 2, then mma)
TOPK_IDS_DTYPES = ("int32", "int64")
TOPK_WEIGHTS_DTYPES = ("float32", "bfloat16")


# (x_dtype, H, group_size, ue8m0, has_scale_ub, scale_layout, pdl): each flag flipped at least
# once, both group sizes against both layouts, and the narrowest (H = G) and a wide H.
SILU_VARIANTS = (
    [("bfloat16", h, g, False, False, layout, True)
     for h in (128, 2048, 7168) for g in (64, 128) for layout in ("row", "col")]
    + [("bfloat16", 2048, 128, True, False, "row", True), ("bfloat16", 2048, 128, True, True, "col", True),
       ("bfloat16", 2048, 128, False, True, "row", True), ("bfloat16", 7168, 128, True, True, "row", True),
       ("bfloat16", 2048, 64, True, False, "col", False), ("float16", 2048, 128, False, False, "row", True),
       ("float16", 1536, 64, True, True, "col", True), ("bfloat16", 2048, 128, False, False, "row", False)]
)


def router_kernels(preset: Preset, m_values=ROUTER_M_VALUES, pdl: bool = True, x_dtype: str = "bfloat16") -> list:
    """The router GEMM specialisations a preset's calls at these M values use (bf16 activations)."""
    bias = preset.gate_dtype if preset.gate_bias else None
    h = preset.hidden_size
    kernels = {router_gemm_kernel(x_dtype, preset.gate_dtype, preset.logits_dtype, bias, m, h, preset.num_experts,
                                  router_gemm_variant(x_dtype, preset.gate_dtype, m, h), pdl)
               for m in m_values}
    return sorted(kernels, key=repr)


def norm_router_kernels(preset: Preset, m_values=NORM_ROUTER_M_VALUES, pdl: bool = True) -> list:
    """The fused RMSNorm + router specialisations of a preset that fuses them (bf16 x and norm)."""
    if not preset.norm_router:
        return []
    kernels = {norm_router_gemm_kernel("bfloat16", "bfloat16", preset.gate_dtype, preset.logits_dtype, m,
                                       preset.hidden_size, preset.num_experts, pdl) for m in m_values}
    return sorted(kernels, key=repr)


def preset_kernels(preset: Preset, pdl: bool = True) -> list:
    h = preset.moe_intermediate_size
    group = 128 if h % 128 == 0 else 64  # gpt-oss's 2880 only splits into groups of 64
    return [pack_topk_kernel(i, w, preset.top_k, 16, pdl)
            for i, w in itertools.product(TOPK_IDS_DTYPES, TOPK_WEIGHTS_DTYPES)] + [
        silu_mul_quant_kernel("bfloat16", h, group, False, False, "row", pdl)] + router_kernels(preset, pdl=pdl) + (
        norm_router_kernels(preset, pdl=pdl))


# (x, weight, out, bias, M, H, E, variant, pdl): every dtype pair, both outputs, bias in three
# dtypes, both variants, no split, a split across a cluster (every mma, dot where a share of H
# does not fit), M buckets, PDL off. The two mma ones at M = 16 and 128 also go through the global
# workspace (``GLOBAL_REDUCE``), which no default picks.
ROUTER_VARIANTS = (
    [(x, w, "float32", None, 1, 7168, 256, "dot", True)
     for x in ("bfloat16", "float16", "float32") for w in ("bfloat16", "float16", "float32")]
    + [("bfloat16", "bfloat16", "bfloat16", "bfloat16", 3, 2880, 128, "dot", True),
       ("bfloat16", "float32", "float32", "float32", 8, 3072, 256, "dot", True),
       ("float32", "float32", "bfloat16", "float16", 33, 64, 1, "dot", True),
       ("bfloat16", "bfloat16", "float32", None, 1, 7168, 256, "dot", False),
       ("bfloat16", "bfloat16", "float32", None, 8, 65536, 256, "dot", True),
       ("bfloat16", "bfloat16", "float32", None, 16, 7168, 256, "mma", True),
       ("bfloat16", "bfloat16", "float32", None, 128, 7168, 256, "mma", True),
       ("float16", "float16", "float32", None, 8, 4096, 128, "mma", True),
       ("bfloat16", "bfloat16", "bfloat16", "bfloat16", 64, 2880, 128, "mma", True),
       ("bfloat16", "bfloat16", "float32", "float32", 256, 64, 1000, "mma", False),
       ("bfloat16", "float32", "float32", None, 32, 3072, 256, "mma", True),
       ("bfloat16", "float32", "bfloat16", "float32", 128, 6144, 128, "mma", False)]
)

GLOBAL_REDUCE = [v for v in ROUTER_VARIANTS if v[7] == "mma" and v[4] in (16, 128) and v[5] == 7168]

# (x, norm, gate, out, M, H, E, pdl): each dtype of each operand, both variants (bf16 above M = 4
# takes tensor cores), cluster split on and off (large H), M buckets.
NORM_ROUTER_VARIANTS = (
    ("bfloat16", "bfloat16", "bfloat16", "float32", 1, 7168, 384, True),
    ("bfloat16", "bfloat16", "bfloat16", "float32", 16, 4096, 256, True),
    ("bfloat16", "bfloat16", "bfloat16", "bfloat16", 64, 7168, 384, False),
    ("float16", "float32", "float32", "bfloat16", 3, 3072, 256, True),
    ("bfloat16", "float16", "bfloat16", "bfloat16", 8, 64, 1, False),
    ("bfloat16", "bfloat16", "float32", "float32", 2, 32768, 64, True),
)


def all_variants() -> list:
    """Every code path of every kernel: each vector width, dtype pair and PDL setting."""
    kernels = set()
    for ids, w, (k, align), pdl in itertools.product(
        TOPK_IDS_DTYPES, TOPK_WEIGHTS_DTYPES, ((8, 16), (4, 16), (8, 8), (6, 16), (8, 4), (1, 16)), (True, False)
    ):
        kernels.add(pack_topk_kernel(ids, w, k, align, pdl))
    kernels.update(silu_mul_quant_kernel(*v) for v in SILU_VARIANTS)
    kernels.update(router_gemm_kernel(*v) for v in ROUTER_VARIANTS)
    kernels.update(dataclasses.replace(router_gemm_kernel(*v), reduce="global") for v in GLOBAL_REDUCE)
    kernels.update(norm_router_gemm_kernel(*v) for v in NORM_ROUTER_VARIANTS)
    return sorted(kernels, key=repr)
