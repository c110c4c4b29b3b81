"""Sweep results (perf/results/<gpu>/<op>.json, ``{"meta", "rows"}`` as docs/benchmarking.md
describes): reading them back, the key of a row's point, its label, and the fields derived from
the measured ones (bytes, GB/s, % of floor, speedup). The sweep, the plots, the notebooks and the
tuning table's writer all read results through here, files of earlier benchmarks included: their
rows are renamed to today's implementations and get a ``mode`` from ``pdl``.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

from dispatch import tiers, tuning
from perf.bench import ALONE, B2B, CHAIN, Bench
from perf.benches import BENCHES

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results" / "h100"


class Results(NamedTuple):
    bench: Bench
    meta: dict
    rows: list
    path: pathlib.Path


def normalise(bench: Bench, row: dict) -> dict:
    """A row of any results file as the sweep writes it today: implementations renamed (the
    bench's ``normalise``), and ``mode`` from ``pdl`` where the row predates modes (those files
    timed back to back only: PDL on is b2b, PDL off alone)."""
    row = bench.normalise(row)
    return row if "mode" in row else {**row, "mode": B2B if row["pdl"] else ALONE}


def point_key(bench: Bench, row: dict) -> tuple:
    """What a row's point is: rows of one point (all implementations and modes) share it."""
    return tuple(row.get(f) for f in bench.point_fields)


def label(row: dict) -> str:
    """An implementation and mode, as tables and legends name them."""
    return f"{row['impl']} {row['mode']}"


def derive(bench: Bench, rows: list) -> list:
    """Fills in ``bytes``, ``gbps``, ``pct_of_floor``, ``speedup`` and ``baseline`` (in place).
    A speedup compares like with like: a chain row with the baseline's chain row at its point,
    any other with the baseline's back-to-back row there."""
    base = {}
    for name in reversed(bench.baselines):  # the first baseline measured at a point wins
        base.update({(point_key(bench, r), r["mode"] == CHAIN): (name, r["cold_us"])
                     for r in rows if r["impl"] == name and r.get("cold_us")})
    for r in rows:
        r.setdefault("bytes", bench.bytes_per_call(r))
        if not r.get("cold_us"):
            continue
        r["gbps"] = round(r["bytes"] / r["cold_us"] / 1e3, 1)
        r["pct_of_floor"] = round(100 * r["floor_us"] / r["cold_us"], 1)
        key = (point_key(bench, r), r["mode"] == CHAIN)
        if key in base:
            name, us = base[key]
            r["speedup"], r["baseline"] = round(us / r["cold_us"], 3), name
    return rows


def load(path) -> Results:
    """A results file with its rows normalised and the derived fields filled in."""
    path = pathlib.Path(path)
    data = json.loads(path.read_text())
    bench = BENCHES[data["meta"]["op"]]
    return Results(bench, data["meta"], derive(bench, [normalise(bench, r) for r in data["rows"]]), path)


def relative(path) -> str:
    """``path`` from the repository root where it lies inside it (as results and tables cite it)."""
    path = pathlib.Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def tier_times(bench: Bench, rows: list) -> dict:
    """``{(dtypes, shape): {M: {tier: [cold us, ...]}}}``: each dispatcher tier's rows as the
    dispatcher launches it (back to back; the CuTe tiers with PDL on), by the op's tuning key."""
    names = set(tiers.op_tiers(bench.op).names())
    times = {}
    for r in rows:
        if r["impl"] in names and r.get("cold_us") and r["mode"] == bench.impl(r["impl"]).natural_mode():
            by_m = times.setdefault(bench.tuning_key(r), {})
            by_m.setdefault(r[bench.size], {}).setdefault(r["impl"], []).append(r["cold_us"])
    return times


def measured(path) -> tuning.Measured:
    """A results file as the tuning table's writer takes it (``dispatch.tuning.write_tuning``)."""
    res = load(path)
    if not res.meta.get("arch"):
        raise ValueError(f"{path}: meta has no 'arch' (an older benchmark wrote it); re-run perf/sweep.py")
    order = tiers.op_tiers(res.bench.op).names()
    timed = frozenset(order) & set(res.bench.impl_names())
    return tuning.Measured(res.bench.op, res.meta["arch"],
                           f"{relative(path)} ({res.meta.get('device')}, {str(res.meta.get('date'))[:10]})",
                           tier_times(res.bench, res.rows), timed, tuple(order))
