"""Top-k id/weight packing: configuration, the choice of vector width, and the op's limits.

``out[t, j] = (ids[t, j] << 16) | bits(bf16(weights[t, j]))``, int32. A pure streaming kernel
over the flat T * k elements; each thread moves ``vec`` consecutive elements with one vector
access per tensor.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from ..common import MAX_ELEMENTS, WIDTHS, pow2_dividing

IDS_DTYPES = ("int32", "int64")
WEIGHTS_DTYPES = ("float32", "bfloat16")
MAX_VEC_BYTES = 16  # the widest vector access


@dataclass(frozen=True)
class PackTopk:
    ids_dtype: str  # "int32" | "int64"
    weights_dtype: str  # "float32" | "bfloat16"
    k: int
    vec: int  # elements per thread; a power of two dividing k
    pdl: bool
    threads: int = 64  # small CTAs spread a small T over more SMs (measured: perf/NOTES.md)


@dataclass(frozen=True)
class Problem:
    """A call without T: what picks the specialisation (with the pointers' alignment)."""

    ids_dtype: str
    weights_dtype: str
    k: int


def supports(p: Problem) -> str | None:
    """Why the kernel cannot take ``p``; None when it can. T is bounded by ``max_rows``."""
    if p.ids_dtype not in IDS_DTYPES:
        return f"ids must be int32 or int64; got {p.ids_dtype}"
    if p.weights_dtype not in WEIGHTS_DTYPES:
        return f"weights must be float32 or bfloat16; got {p.weights_dtype}"
    return None


def max_rows(p: Problem) -> int:
    """The largest T: the kernel indexes the flat T * k elements with 32-bit integers."""
    return MAX_ELEMENTS // max(p.k, 1)


@functools.lru_cache(maxsize=None)  # the per-call host path builds no new objects
def pick(ids_dtype: str, weights_dtype: str, k: int, align_bytes: int, pdl: bool) -> PackTopk:
    """The specialisation for these dtypes, k and pointer alignment (bytes, a power of two).

    ``vec`` divides k (so groups never straddle the end) and keeps every vector access (at most
    16 bytes each) within the tensors' alignment."""
    sizes = (WIDTHS[ids_dtype] // 8, WIDTHS[weights_dtype] // 8, 4)
    vec = pow2_dividing(k, 8)
    while vec > 1 and any(min(vec * size, MAX_VEC_BYTES) > align_bytes for size in sizes):
        vec //= 2
    return PackTopk(ids_dtype, weights_dtype, k, vec, pdl)


def preset_configs(preset, pdl: bool = True, num_sms: int | None = None) -> list:
    """What a preset's calls use: every dtype pair at its top_k, 16-byte aligned (fresh tensors).
    ``num_sms`` is unused: the tiling does not depend on the GPU."""
    return [pick(i, w, preset.top_k, MAX_VEC_BYTES, pdl) for i, w in itertools.product(IDS_DTYPES, WEIGHTS_DTYPES)]


def variants() -> list:
    """Every code path: each dtype pair, vector width (from k and alignment) and PDL setting."""
    return sorted({pick(i, w, k, align, pdl) for i, w, (k, align), pdl in itertools.product(
        IDS_DTYPES, WEIGHTS_DTYPES, ((8, 16), (4, 16), (8, 8), (6, 16), (8, 4), (1, 16)), (True, False))}, key=repr)
