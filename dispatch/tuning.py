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

``write_tuning`` writes the windows a sweep measured (``best_windows``), from the tier timings
of its results (``Measured``); ``python perf/sweep.py --write-tuning RESULTS.json`` (``make
tuning``) reads the results and calls it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
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


# -- the writer ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Measured:
    """One sweep's timings of an op's tiers on one arch, as ``write_tuning`` takes them."""

    op: str
    arch: str
    source: str  # where they were taken (results file, device, date), for the table's "source"
    times: dict  # {(dtypes, shape): {M: {tier: [cold us, ...]}}}
    timed: frozenset  # every tier the sweep times: one without a window there never runs
    order: tuple  # the op's tiers in order; the last takes whatever no window does


def best_windows(times: dict) -> dict:
    """``{tier: (lo, hi)}``: contiguous M windows, one per tier, from ``{M: {tier: cold us}}``.

    Where the fastest tier at each measured M forms one run per tier, those runs are the
    windows. A tier has one window, so where it is fastest in two separate runs, the split into
    runs (each tier in at most one) that loses least against the fastest tier at each M, as
    relative slowdown summed over M, is taken. A boundary between two measured M sits halfway
    in log space; the first window starts at 0 and the last has no upper bound (hi None)."""
    ms = sorted(m for m in times if times[m])
    fastest = {m: min(times[m].values()) for m in ms}

    @functools.cache
    def search(i: int, used: frozenset) -> tuple:  # (loss, number of runs, runs) covering ms[i:]
        if i == len(ms):
            return 0.0, 0, ()
        best = (math.inf, 0, ())
        for j in range(i + 1, len(ms) + 1):
            for tier in sorted(set(times[ms[i]]) - used):
                if any(tier not in times[m] for m in ms[i:j]):
                    continue
                loss = sum(times[m][tier] / fastest[m] - 1 for m in ms[i:j])
                rest_loss, rest_n, rest = search(j, used | {tier})
                best = min(best, (loss + rest_loss, rest_n + 1, ((tier, ms[i], ms[j - 1]),) + rest))
        return best

    loss, _, runs = search(0, frozenset())
    if loss == math.inf:
        raise ValueError("no split into one run per tier covers every measured M")
    windows = {}
    for n, (tier, first, last) in enumerate(runs):
        lo = 0 if n == 0 else math.isqrt(runs[n - 1][2] * first) + 1
        hi = None if n == len(runs) - 1 else math.isqrt(last * runs[n + 1][1])
        windows[tier] = (lo, hi)
    return windows


def measured_windows(measured: Measured) -> dict:
    """``{(dtypes, shape): {tier: (lo, hi) or None}}``: the median cold time of each tier per M,
    through ``best_windows``. Every other timed tier gets None (never): a tier the table does
    not name may run at every M. The op's last tier is left out: it takes whatever no window does."""
    out = {}
    for key, by_m in measured.times.items():
        windows = best_windows({m: {t: statistics.median(v) for t, v in ts.items()} for m, ts in by_m.items()})
        never = measured.timed - set(windows) - {measured.order[-1]}
        out[key] = {**windows, **{t: None for t in measured.order if t in never}}
    return out


def dump_table(source: str, entries: list) -> str:
    """tuning.json's text: one entry per line."""
    lines = ",\n".join(f"    {json.dumps(e)}" for e in entries)
    return f'{{\n  "source": {json.dumps(source)},\n  "entries": [\n{lines}\n  ]\n}}\n'


def write_tuning(measured: list, table_path=TABLE_PATH) -> list:
    """Rewrites ``table_path`` with the windows of each ``Measured``: an entry per (op, arch,
    dtypes, shape) measured replaces the table's (in place) or is added; the others stay.
    Returns the written entries."""
    table_path = Path(table_path)
    text = table_path.read_text()
    parse(text, str(table_path))  # never merge into a malformed table
    new = {}
    for m in measured:
        for (dtypes, shape), windows in measured_windows(m).items():
            new[(m.op, m.arch, tuple(dtypes), tuple(shape))] = {
                "op": m.op, "arch": m.arch, "dtypes": list(dtypes), "shape": list(shape),
                "windows": {t: None if w is None else [w[0], w[1]] for t, w in windows.items()}}

    def key(e):
        return e["op"], e["arch"], tuple(e["dtypes"]), tuple(e["shape"])

    old = json.loads(text)["entries"]
    entries = [new.get(key(e), e) for e in old]
    entries += [e for k, e in new.items() if k not in {key(o) for o in old}]
    source = ("measured: the fastest tier per M (cold, per call in a CUDA graph, PDL on) of "
              + "; ".join(f"{m.op} from {m.source}" for m in measured))
    if any(key(e) not in new for e in old):
        source += "; entries for problems not measured there are kept from the previous table"
    table_path.write_text(dump_table(source, entries))
    parse(table_path.read_text(), str(table_path))
    return list(new.values())
