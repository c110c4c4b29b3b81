"""What every kernel family's configuration shares, without the DSL or torch: dtype widths, the
32-bit index limit, and the shared-memory plan that both the host's budget check and the
kernel's allocation read."""

from __future__ import annotations

from typing import NamedTuple

# Configs name dtypes by torch's spelling, so compile keys stay plain data.
WIDTHS = {"bfloat16": 16, "float16": 16, "float32": 32, "int32": 32, "int64": 64, "float8_e4m3fn": 8, "uint8": 8}
FLOATS = ("bfloat16", "float16", "float32")
MAX_ELEMENTS = 2**31 - 1  # kernels index with 32-bit integers
WARP = 32
H100_SMS = 132  # the SM count tilings are chosen for when no GPU says otherwise (an H100 SXM)


class Slot(NamedTuple):
    """One shared-memory allocation: ``shape`` elements of ``dtype`` laid out with ``stride``,
    at an address aligned to ``align`` bytes (at least the element size)."""

    name: str
    dtype: str
    shape: tuple
    stride: tuple
    align: int

    @property
    def bytes(self) -> int:
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        return span * WIDTHS[self.dtype] // 8


def plan_bytes(plan: list[Slot]) -> int:
    """The bytes a plan takes when allocated in order, each slot at its alignment."""
    end = 0
    for slot in plan:
        align = max(slot.align, WIDTHS[slot.dtype] // 8)
        end = -(-end // align) * align + slot.bytes
    return end


def pow2_dividing(n: int, cap: int) -> int:
    """The largest power of two <= ``cap`` dividing ``n``."""
    v = cap
    while n % v:
        v //= 2
    return v
