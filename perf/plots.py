"""Figures and tables of sweep results (perf/results/<gpu>/*.json), without a GPU.

The notebooks (perf/*.ipynb) call these; ``perf/sweep.py`` draws ``<op>.png`` with ``save_png``.
Results are read through ``perf.results``, so files of earlier benchmarks plot too.

Every line is one implementation in one timing mode: a colour and a marker per implementation,
a line style per mode (b2b solid, alone dotted, chain dashed), lines drawn thinner the later
they come so that one lying on another still shows (the dispatcher's lies on the tier it ran);
the legend sits below the panels.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib.pyplot as plt
from matplotlib import ticker

from cute_kernels import timing
from dispatch import tiers
from perf import results, targets
from perf.bench import ALONE, B2B, CHAIN
from perf.benches import BENCHES
from perf.results import Results

MODE_STYLES = {B2B: "-", ALONE: ":", CHAIN: "--"}
MARKERS = "osD^vP*Xh<>"
# A PNG's bytes follow its pixels alone: no matplotlib version in it, so a redraw on another
# machine changes the file only where the picture changed.
PNG_METADATA = {"Software": None}


def load(op_name: str, results_dir=results.RESULTS) -> Results | None:
    """The op's committed results with a one-paragraph summary, or None (saying why) if there are none."""
    path = pathlib.Path(results_dir) / BENCHES[op_name].file
    if not path.exists():
        print(f"No results for {op_name} yet: {results.relative(path)} does not exist.\nTake them on the GPU "
              f"machine with\n    python perf/sweep.py --op {op_name} --out {results.relative(path.parent)}\n"
              "and commit the JSON; the plots and tables below stay empty until then.")
        return None
    res = results.load(path)
    meta, rows, bench = res.meta, res.rows, res.bench
    errors = [r for r in rows if r.get("error")]
    modes = ", ".join(dict.fromkeys(r["mode"] for r in rows))
    print(f"{results.relative(path)}: {len(rows)} rows ({len(errors)} failed; modes {modes}) on {meta.get('device')} "
          f"({meta.get('arch', 'arch not recorded')}), {str(meta.get('date'))[:16]}; copy {meta.get('copy_gbps')} "
          f"GB/s, graph launch floor {meta.get('graph_launch_floor_us')} us; torch {meta.get('torch')}, "
          f"CuTe DSL {meta.get('cutlass_dsl')}, driver {meta.get('driver')}"
          + ("" if meta.get("complete", True) else "\nThe run stopped early: these are the points it finished."))
    for r in errors:
        print(f"  failed: {results.label(r)} {bench.series(r)} {bench.size}={r[bench.size]}: {r['error'][:120]}")
    return res


def for_notebook() -> None:
    """A notebook's figures inline as PNG without the matplotlib version, so re-running it
    from unchanged results rewrites it byte for byte."""
    from IPython import get_ipython

    shell = get_ipython()
    shell.run_line_magic("matplotlib", "inline")
    shell.run_line_magic("config", f"InlineBackend.print_figure_kwargs = {{'metadata': {PNG_METADATA!r}}}")


def _styles(bench, rows) -> dict:
    """label -> plot keywords, in legend order (the bench's implementations first, then modes)."""
    impls = list(dict.fromkeys(bench.impl_names() + [r["impl"] for r in rows]))
    present = {(r["impl"], r["mode"]) for r in rows}
    ordered = sorted(present, key=lambda p: (impls.index(p[0]), list(MODE_STYLES).index(p[1])))
    styles = {}
    for n, (impl, mode) in enumerate(ordered):
        i, later = impls.index(impl), n / max(1, len(ordered) - 1)  # 0 for the first line drawn, 1 for the last
        styles[f"{impl} {mode}"] = dict(color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)],
                                        linestyle=MODE_STYLES[mode], linewidth=3.2 - 2.2 * later,
                                        markersize=8.5 - 4.5 * later, markerfacecolor="none", zorder=2 + n)
    return styles


def _plain_log_axis(axis, values) -> None:
    """Ticks at the measured sizes, labelled as numbers (1, 2, 4, ... 1k, 16k), not powers."""
    axis.set_major_locator(ticker.FixedLocator(sorted(set(values))))
    axis.set_major_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v / 1024:g}k" if v >= 1024 and v % 1024 == 0 else f"{v:g}"))
    axis.set_minor_locator(ticker.NullLocator())


def _title(res: Results, what: str) -> str:
    return f"{res.bench.op} on {res.meta.get('device', '?')} ({str(res.meta.get('date', ''))[:10]})\n{what}"


def _panels(res: Results, value, ylabel: str, what: str, *, floor=False, reference=None, logy=False):
    """A panel per series (preset, dtype pair, ...) with a line per implementation and mode over
    M (or T); one legend for all, below the panels."""
    bench, rows = res.bench, res.rows
    names = list(dict.fromkeys(bench.series(r) for r in rows))
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    # 72 dpi on screen keeps the notebooks small; save_png writes at 120
    fig, axes = plt.subplots(nrows, cols, figsize=(max(3.8 * cols, 7.6), 2.9 * nrows + 1.2), dpi=72,
                             squeeze=False, layout="constrained")
    handles, styles = {}, _styles(bench, rows)
    for ax, name in zip(axes.flat, names):
        sel = sorted((r for r in rows if bench.series(r) == name), key=lambda r: r[bench.size])
        for label, style in styles.items():
            pts = [(r[bench.size], value(r)) for r in sel if results.label(r) == label and value(r) is not None]
            if pts:
                handles[label], = ax.plot(*zip(*pts), label=label, **style)
        if floor:
            handles["floor"], = ax.plot(*zip(*sorted({(r[bench.size], r["floor_us"]) for r in sel})),
                                        color="0.35", linestyle="-.", linewidth=1.2, zorder=1, label="floor")
        if reference is not None:
            ax.axhline(reference, color="black", linewidth=0.8, zorder=1)
        ax.set_xscale("log", base=2)
        _plain_log_axis(ax.xaxis, [r[bench.size] for r in sel])
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.set_xlabel(bench.size, fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel(ylabel, fontsize=9)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 5), fontsize=9,
               title="implementation and mode", title_fontsize=9)
    fig.suptitle(_title(res, what))
    return fig


def time_vs_size(res: Results | None, metric: str = "cold_us"):
    """us per call (``cold_us`` or ``hot_us``) against M per implementation and mode, with the
    floor (launch floor + bytes / copy bandwidth, measured in the same run)."""
    if res is None:
        return None
    which = metric.removesuffix("_us")
    values = [r[metric] for r in res.rows if r.get(metric)]
    return _panels(res, lambda r: r.get(metric), f"us per call ({which})", f"{which} us per call in a CUDA graph",
                   floor=True, logy=max(values) > 30 * min(values))  # log where T spans decades of time


def pct_of_floor(res: Results | None):
    """The floor as % of the cold time: 100 = at the floor."""
    if res is None:
        return None
    return _panels(res, lambda r: r.get("pct_of_floor"), "% of floor (cold)", "floor / cold time, %", reference=100)


def speedup(res: Results | None):
    """Cold speedup over the op's baseline (torch's path) at the same point, in the same kind of
    graph (chain over chain, else back to back)."""
    if res is None:
        return None
    base = " else ".join(res.bench.baselines)
    return _panels(res, lambda r: r.get("speedup"), f"speedup over {base}", f"cold speedup over {base}", reference=1)


def targets_table(res: Results | None):
    """The op's targets (perf/targets.py) against the measured values, as a Markdown table."""
    if res is None:
        return _markdown("No results: every target is unmeasured.")
    lines = ["| target | mode | bar (us) | measured (us) | slowest at | status | from |",
             "|---|---|---|---|---|---|---|"]
    for t in targets.evaluate(res.bench.op, res.rows, lambda r: results.point_key(res.bench, r)):
        measured = "-" if t["measured_us"] is None else f"{t['measured_us']:.2f}"
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        lines.append(f"| {t['target']} | {t['mode']} | {t['bar_us']} | {measured} | {t['worst_at'] or '-'} "
                     f"| {status} | {t['source']} |")
    return _markdown("\n".join(lines))


def tier_table(res: Results | None):
    """Per point and mode: the tier the dispatcher ran, and the fastest tier measured in the
    same kind of graph (each tier as the dispatcher launches it, or in a chain)."""
    if res is None:
        return _markdown("No results.")
    if not any(r["impl"] == "dispatch" for r in res.rows):
        return _markdown("No dispatcher rows in these results (the earlier benchmarks did not time it).")
    bench = res.bench
    tier_impls = {i.name: i for i in bench.impls if i.name in tiers.op_tiers(bench.op).names()}

    def same_graph(tier_row, mode):
        impl = tier_impls.get(tier_row["impl"])
        return impl is not None and tier_row["mode"] == (CHAIN if mode == CHAIN else impl.natural_mode())

    lines = [f"| series | {bench.size} | mode | dispatch ran | us | fastest tier | us |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in res.rows if r["impl"] == "dispatch" and r.get("cold_us")):
        same = [t for t in res.rows if results.point_key(bench, t) == results.point_key(bench, r)
                and same_graph(t, r["mode"]) and t.get("cold_us")]
        best = min(same, key=lambda t: t["cold_us"], default=None)
        fastest = "- | -" if best is None else f"{best['impl']} | {best['cold_us']:.2f}"
        lines.append(f"| {bench.series(r)} | {r[bench.size]} | {r['mode']} | {r.get('tier', '?')} | "
                     f"{r['cold_us']:.2f} | {fastest} |")
    return _markdown("\n".join(lines))


def _markdown(text: str):
    """Rendered in a notebook, plain text elsewhere."""
    try:
        from IPython.display import Markdown
    except ImportError:
        return text
    return Markdown(text)


def save_png(json_path) -> pathlib.Path:
    """``<op>.png`` beside a results file: cold time against M, the figure of the README."""
    res = results.load(json_path)
    png = pathlib.Path(json_path).with_suffix(".png")
    timing.save_figure(time_vs_size(res), png, _title(res, "cold us per call in a CUDA graph"), PNG_METADATA)
    return png
