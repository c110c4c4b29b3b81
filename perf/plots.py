"""Figures and tables of sweep results (perf/results/<gpu>/*.json), without a GPU.

The notebooks (perf/*.ipynb) call these; ``perf/sweep.py`` draws ``<file>.png`` with
``save_png``. Files written by the earlier per-op benchmarks load too: ``sweep.load_results``
renames their implementations and derives bytes, GB/s, % of floor and speedups from their rows.
"""

from __future__ import annotations

import math
import pathlib
from typing import NamedTuple

import matplotlib.pyplot as plt

import sweep
import targets
from cute_kernels import timing


class Results(NamedTuple):
    op: object  # the op's definition module (perf/bench_<op>.py)
    meta: dict
    rows: list
    path: pathlib.Path


def load(op_name: str, results_dir=sweep.RESULTS) -> Results | None:
    """The op's committed results with a one-paragraph summary, or None (saying why) if there are none."""
    op = sweep.OPS[op_name]
    path = pathlib.Path(results_dir) / f"{op.FILE}.json"
    if not path.exists():
        print(f"No results for {op_name} yet: {sweep._relative(path)} does not exist.\nTake them on the GPU "
              f"machine with\n    python perf/sweep.py --op {op_name} --out {sweep._relative(path.parent)}\n"
              "and commit the JSON; the plots and tables below stay empty until then.")
        return None
    op, meta, rows = sweep.load_results(path)
    errors = [r for r in rows if r.get("error")]
    print(f"{sweep._relative(path)}: {len(rows)} rows ({len(errors)} failed) on {meta.get('device')} "
          f"({meta.get('arch', 'arch not recorded')}), {str(meta.get('date'))[:16]}; copy {meta.get('copy_gbps')} "
          f"GB/s, graph launch floor {meta.get('graph_launch_floor_us')} us; torch {meta.get('torch')}, "
          f"CuTe DSL {meta.get('cutlass_dsl')}, driver {meta.get('driver')}"
          + ("" if meta.get("complete", True) else "\nThe run stopped early: these are the points it finished."))
    for r in errors:
        print(f"  failed: {sweep.label(op, r)} {op.series(r)} {op.SIZE}={r[op.SIZE]}: {r['error'][:120]}")
    return Results(op, meta, rows, path)


def _styles(op, rows) -> dict:
    """label -> (color, line style): one color per implementation, dotted with PDL off."""
    impls = list(dict.fromkeys([i for i, _ in op.IMPLS] + [r["impl"] for r in rows]))
    in_order = sorted(rows, key=lambda r: (impls.index(r["impl"]), not r["pdl"]))
    labels = dict.fromkeys(sweep.label(op, r) for r in in_order)
    return {name: (f"C{impls.index(name.split(' ')[0]) % 10}", ":" if name.endswith("PDL off") else "-")
            for name in labels}


def _title(res: Results, what: str) -> str:
    return f"{res.op.OP} on {res.meta.get('device', '?')} ({str(res.meta.get('date', ''))[:10]}): {what}"


def _panels(res: Results, value, ylabel: str, what: str, *, floor=False, reference=None, logy=False):
    """A panel per series (preset, dtype pair, ...) with a line per implementation over M (or T)."""
    op, rows = res.op, res.rows
    names = list(dict.fromkeys(op.series(r) for r in rows))
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    # 72 dpi on screen keeps the notebooks small; save_png writes at its own resolution
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 3.0 * nrows), dpi=72, squeeze=False)
    handles, styles = {}, _styles(op, rows)
    for ax, name in zip(axes.flat, names):
        sel = sorted((r for r in rows if op.series(r) == name), key=lambda r: r[op.SIZE])
        for label, (color, style) in styles.items():
            pts = [(r[op.SIZE], value(r)) for r in sel if sweep.label(op, r) == label and value(r) is not None]
            if pts:
                handles[label], = ax.plot(*zip(*pts), style, color=color, marker="o", markersize=3, label=label)
        if floor:
            handles["floor"], = ax.plot(*zip(*sorted({(r[op.SIZE], r["floor_us"]) for r in sel})), "--", color="black",
                                        label="floor")
        if reference is not None:
            ax.axhline(reference, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(op.SIZE, fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.suptitle(_title(res, what))
    fig.tight_layout()
    return fig


def time_vs_size(res: Results | None, metric: str = "cold_us"):
    """us per call (``cold_us`` or ``hot_us``) against M per implementation, with the floor
    (launch floor + bytes / copy bandwidth, measured in the same run)."""
    if res is None:
        return None
    which = metric.removesuffix("_us")
    values = [r[metric] for r in res.rows if r.get(metric)]
    return _panels(res, lambda r: r.get(metric), f"us per call ({which}, CUDA graph)", f"{which} us per call",
                   floor=True, logy=max(values) > 30 * min(values))  # log where T spans decades of time


def pct_of_floor(res: Results | None):
    """The floor as % of the cold time: 100 = at the floor."""
    if res is None:
        return None
    return _panels(res, lambda r: r.get("pct_of_floor"), "% of floor (cold)", "floor / cold time, %", reference=100)


def speedup(res: Results | None):
    """Cold speedup over the op's baseline (torch's path) at the same point."""
    if res is None:
        return None
    base = " else ".join(res.op.BASELINES)
    return _panels(res, lambda r: r.get("speedup"), f"speedup over {base}", f"cold speedup over {base}", reference=1)


def targets_table(res: Results | None):
    """The op's targets (perf/targets.py) against the measured values, as a Markdown table."""
    if res is None:
        return _markdown("No results: every target is unmeasured.")
    lines = ["| target | bar (us) | measured (us) | slowest at | status | from |", "|---|---|---|---|---|---|"]
    for t in targets.evaluate(res.op.OP, res.rows, lambda r: sweep.point_key(res.op, r)):
        measured = "-" if t["measured_us"] is None else f"{t['measured_us']:.2f}"
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        lines.append(f"| {t['target']} | {t['bar_us']} | {measured} | {t['worst_at'] or '-'} | {status} "
                     f"| {t['source']} |")
    return _markdown("\n".join(lines))


def tier_table(res: Results | None):
    """Per point: the tier the dispatcher ran, and the fastest tier measured (cold, PDL on)."""
    if res is None:
        return _markdown("No results.")
    if not any(r["impl"] == "dispatch" for r in res.rows):
        return _markdown("No dispatcher rows in these results (the earlier benchmarks did not time it).")
    op = res.op
    lines = [f"| series | {op.SIZE} | dispatch ran | us | fastest tier | us |", "|---|---|---|---|---|---|"]
    for r in (r for r in res.rows if r["impl"] == "dispatch" and r.get("cold_us")):
        same = [t for t in res.rows if sweep.point_key(op, t) == sweep.point_key(op, r)
                and (t["impl"], t["pdl"]) in op.TIERS and t.get("cold_us")]
        best = min(same, key=lambda t: t["cold_us"], default=None)
        fastest = "- | -" if best is None else f"{op.TIERS[best['impl'], best['pdl']]} | {best['cold_us']:.2f}"
        lines.append(f"| {op.series(r)} | {r[op.SIZE]} | {r.get('tier', '?')} | {r['cold_us']:.2f} | {fastest} |")
    return _markdown("\n".join(lines))


def _markdown(text: str):
    """Rendered in a notebook, plain text elsewhere."""
    try:
        from IPython.display import Markdown
    except ImportError:
        return text
    return Markdown(text)


def save_png(json_path) -> pathlib.Path:
    """``<file>.png`` beside a results file: cold time against M, the figure of the README."""
    json_path = pathlib.Path(json_path)
    op, meta, rows = sweep.load_results(json_path)
    res = Results(op, meta, rows, json_path)
    png = json_path.with_suffix(".png")
    timing.save_figure(time_vs_size(res), png, _title(res, "cold us per call"))
    return png
