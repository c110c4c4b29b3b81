"""SiLU(gate) * up, quantised to float8_e4m3fn with one fp32 scale per group of columns:
configuration and the op's limits (the kernel: ``kernel.py``).

x [T, 2H] = [gate | up] (bf16/fp16) -> q [T, H] e4m3 and scales [T, H / G] fp32, row-major or
with strides (1, T) ("col").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..common import MAX_ELEMENTS

X_DTYPES = ("bfloat16", "float16")
GROUP_SIZES = (64, 128)
SCALE_LAYOUTS = ("row", "col")


@dataclass(frozen=True)
class SiluMulQuantFp8:
    x_dtype: str  # "bfloat16" | "float16"
    hidden: int  # H; x is [T, 2H]
    group_size: int  # 64 | 128
    ue8m0: bool
    has_scale_ub: bool
    scale_layout: str  # "row" | "col"
    pdl: bool
    threads: int = 128  # measured on the H100: 2-3% faster than 256 at every T, 512 slower

    @property
    def exact_division(self) -> bool:
        """True fp32 divisions, as the spec writes them, only where the result must be
        bit-exact: power-of-two (ue8m0) scales. Otherwise an approximate reciprocal (1 ulp)
        for the SiLU denominator and one reciprocal of the scale per chunk: IEEE divisions are
        ~10 instructions each, and at two per element they made the kernel issue-bound
        (perf/NOTES.md). Scales stay within 3e-7 relative of the spec's and q within one e4m3
        step."""
        return self.ue8m0

    @property
    def groups(self) -> int:
        return self.hidden // self.group_size


@dataclass(frozen=True)
class Problem:
    """A call without T."""

    x_dtype: str
    hidden: int  # H: x is [T, 2H]
    group_size: int
    scale_layout: str


def supports(p: Problem) -> str | None:
    """Why the kernel cannot take ``p``; None when it can. T is bounded by ``max_rows``."""
    if p.x_dtype not in X_DTYPES:
        return f"x must be bfloat16 or float16; got {p.x_dtype}"
    if p.group_size not in GROUP_SIZES:
        return f"group_size must be 64 or 128; got {p.group_size!r}"
    if p.scale_layout not in SCALE_LAYOUTS:
        return f"scale_layout must be 'row' or 'col'; got {p.scale_layout!r}"
    if p.hidden <= 0 or p.hidden % p.group_size:
        return f"x's half-width H={p.hidden} must be a positive multiple of group_size={p.group_size}"
    return None


def max_rows(p: Problem) -> int:
    """The largest T: the kernel indexes x's T * 2H elements with 32-bit integers."""
    return MAX_ELEMENTS // max(2 * p.hidden, 1)


@functools.lru_cache(maxsize=None)
def pick(x_dtype: str, hidden: int, group_size: int, ue8m0: bool, has_scale_ub: bool, scale_layout: str,
         pdl: bool) -> SiluMulQuantFp8:
    """One specialisation per problem and option set: the kernel has no tiling to choose."""
    return SiluMulQuantFp8(x_dtype, hidden, group_size, ue8m0, has_scale_ub, scale_layout, pdl)


def preset_group_size(hidden: int) -> int:
    """128-column groups where they divide H, else 64 (gpt-oss's 2880 only splits into 64)."""
    return 128 if hidden % 128 == 0 else 64


def preset_configs(preset, pdl: bool = True, num_sms: int | None = None) -> list:
    """What a preset's expert activations use: bf16, its FFN width, row-major scales.
    ``num_sms`` is unused: the tiling does not depend on the GPU."""
    h = preset.moe_intermediate_size
    return [pick("bfloat16", h, preset_group_size(h), False, False, "row", pdl)]


# (x_dtype, H, group_size, ue8m0, has_scale_ub, scale_layout, pdl): each flag flipped at least
# once, both group sizes against both layouts, and the narrowest (H = G) and a wide H.
VARIANTS = (
    [("bfloat16", h, g, False, False, layout, True)
     for h in (128, 2048, 7168) for g in (64, 128) for layout in ("row", "col")]
    + [("bfloat16", 2048, 128, True, False, "row", True), ("bfloat16", 2048, 128, True, True, "col", True),
       ("bfloat16", 2048, 128, False, True, "row", True), ("bfloat16", 7168, 128, True, True, "row", True),
       ("bfloat16", 2048, 64, True, False, "col", False), ("float16", 2048, 128, False, False, "row", True),
       ("float16", 1536, 64, True, True, "col", True), ("bfloat16", 2048, 128, False, False, "row", False)]
)


def variants() -> list:
    """Every code path of the kernel (``VARIANTS``)."""
    return sorted({pick(*v) for v in VARIANTS}, key=repr)
