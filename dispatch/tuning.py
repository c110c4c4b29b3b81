"""Tier boundaries over M (the number of rows), from the tuning table shipped beside this file.

Tiers are tried in order and the first eligible one runs; the table narrows that by M. For one
problem it gives each named tier a *window*, an inclusive range of M in which it may run; a tier
outside its window is passed over for that M, and a tier the entry does not name has no window
(it may run for every M; tiers added with ``register_tier`` are in that case unless the table
names them). The last eligible tier catches every M that no window claimed.

``tuning.json``::

    {
      "source": "how the numbers were obtained (a sweep's device and date, or a heuristic)",
      "entries": [
        {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "bfloat16"],
         "shape": [7168, 256], "windows": {"cute-dot": [0, 8], "cute-mma": [9, null]}}
      ]
    }

``op`` is a dispatched op's name; ``arch`` a device arch as ``dispatch.device_arch`` names it;
``dtypes`` and ``shape`` are the op's tuning key, everything but M:

================================  ===========================  ===============================
op                                dtypes                       shape
================================  ===========================  ===============================
``router_gemm``                   x, weight                    H, E
``norm_router_gemm``              x, gate_weight               H, E
``silu_mul_quant_fp8``            x                            H (half of x's width)
``pack_topk``                     ids, weights                 k
================================  ===========================  ===============================

A window is ``[lo, hi]`` with ``hi`` null for no upper bound, or null: the tier never runs for
that problem (a measured table says so for a tier that was slower at every M, which it must:
an unnamed tier may run at every M). A problem with no entry gets ``default_windows``.
``python perf/sweep.py --write-tuning RESULTS.json`` writes the windows a sweep measured.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

NO_LIMIT = sys.maxsize  # an integer, so the per-call test stays an integer compare
NEVER = (1, 0)  # lo > hi: no M falls in it
TABLE_PATH = Path(__file__).with_name("tuning.json")

_SIXTEEN_BIT = ("bfloat16", "float16")


def default_windows(op: str, dtypes: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """The boundaries used where the table has no entry.

    Router GEMM: the dot-product kernel wins at decode sizes, the tensor-core kernel above (bf16
    x with bf16 or fp32 weights); with other fp32 operands or mixed dtypes, which no
    tensor-core path takes, the dot kernel is kept to small M and torch's fp32 GEMM takes the
    rest. fp16 weights have no dot kernel, so the tensor-core kernel takes every M there."""
    if op != "router_gemm":
        return {}
    x, weight = dtypes
    if x == "bfloat16" and weight in ("bfloat16", "float32"):
        return {"cute-dot": (0, 8), "cute-mma": (9, NO_LIMIT)}
    if x == weight == "float16":
        return {"cute-mma": (0, NO_LIMIT)}
    return {"cute-dot": (0, 64)}


def parse(text: str, origin: str = "tuning table") -> tuple[str, dict]:
    """``(source, {(op, arch, dtypes, shape): {tier: (lo, hi)}})``; ValueError on a bad table."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("source"), str) or not isinstance(
            data.get("entries"), list):
        raise ValueError(f"{origin}: expected an object with a 'source' string and an 'entries' list")
    entries = {}
    for i, entry in enumerate(data["entries"]):
        try:
            key = (entry["op"], entry["arch"], tuple(entry["dtypes"]), tuple(int(n) for n in entry["shape"]))
            entries[key] = {tier: _window(w) for tier, w in entry["windows"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{origin}: entry {i} is malformed ({e!r}): {entry!r}") from None
    return data["source"], entries


def _window(w) -> tuple[int, int]:
    if w is None:
        return NEVER
    lo, hi = w
    lo, hi = int(lo), NO_LIMIT if hi is None else int(hi)
    if not 0 <= lo <= hi:
        raise ValueError(f"window {w} must have 0 <= lo <= hi")
    return lo, hi


@functools.lru_cache(maxsize=None)
def table() -> tuple[str, dict]:
    """The shipped table, parsed once."""
    return parse(TABLE_PATH.read_text(), str(TABLE_PATH))


def windows(op: str, arch: str | None, dtypes: tuple[str, ...], shape: tuple[int, ...]):
    """``({tier: (lo, hi)}, source)`` for one problem: its table entry, else the default."""
    source, entries = table()
    found = entries.get((op, arch, dtypes, shape))
    if found is not None:
        return found, source
    return default_windows(op, dtypes), "built-in default, no table entry"
