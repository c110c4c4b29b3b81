"""Performance sweep: op x preset (or shape) x M (or T) x implementation, timed the one way this
project times (``cute_kernels.timing``: cold and hot, per call inside a CUDA graph, median of the
replays; docs/benchmarking.md), torch and the dispatcher's tiers side by side in the same run.

    python perf/sweep.py --op router_gemm --out perf/results/h100            # GPU
    python perf/sweep.py --op all --quick --out /tmp/quick                   # smoke run (GPU)
    python perf/sweep.py --op router_gemm --dry-run                          # the plan (no GPU)
    python perf/sweep.py --write-tuning perf/results/h100/router_gemm.json   # dispatch/tuning.json (no GPU)
    python perf/sweep.py --plot-only perf/results/h100/router_gemm.json      # redraw the PNG (no GPU)

Writes <out>/<file>.json (``{"meta", "rows"}`` as docs/benchmarking.md describes; rewritten after
every point, so an interrupted run keeps what it measured) and the rows as CSV beside it, then
<file>.png. ``meta``: device, arch, clocks, driver, CUDA, torch and DSL versions, date, the copy
bandwidth and graph launch floor measured at the start of the run. A row: the point's fields,
``impl``, ``pdl``, ``cold_us``, ``hot_us``, ``floor_us`` (launch floor + bytes / copy bandwidth),
``bytes``, ``gbps`` (bytes / cold time), ``pct_of_floor`` (floor / cold time, in %), ``speedup``
(the ``baseline`` implementation's cold time / this one's). An implementation that fails at a
point leaves ``error`` in its row and the sweep goes on; the exit status is then 1.

Each op's definitions live in perf/bench_<op>.py; this file runs them, derives the table of tier
windows for the dispatcher, and reads result files back (for plots.py and the notebooks). An op
module has ``OP`` (its name), ``FILE`` (results file stem), ``SIZE`` ("M" or "T"), ``POINT`` (a
point's fields), ``IMPLS`` ((impl, pdl) pairs timed by default), ``PDL_IMPLS`` (those taking
``pdl``), ``BASELINES`` (speedups are over the first measured), ``TIERS`` ((impl, pdl) -> the
dispatcher tier it stands for), ``DESCRIPTIONS``, and ``points(presets, shapes, sizes, quick)``,
``series(point)``, ``tuning_key(point)``, ``bytes_per_call(point)``, ``measure(impl, pdl, point,
replays)``; optionally ``unavailable(impl, point)``, ``extra_meta(points, replays)`` and
``normalise(row)`` (renames rows of older result files).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import platform
import statistics
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import timing  # noqa: E402
from dispatch import environment, tiers, tuning  # noqa: E402

import bench_norm_router_gemm  # noqa: E402
import bench_pack_topk  # noqa: E402
import bench_router_gemm  # noqa: E402
import bench_silu_mul_quant  # noqa: E402
import targets  # noqa: E402

OPS = {m.OP: m for m in (bench_router_gemm, bench_norm_router_gemm, bench_silu_mul_quant, bench_pack_topk)}
RESULTS = ROOT / "perf" / "results" / "h100"
OPTIONAL_IMPLS = ("torch_compile", "flashinfer")  # peers: a failure is recorded, not counted against the run
PLAN_ARCH = "sm_90a"  # what --dry-run plans for on a machine without a GPU


# -- the plan --------------------------------------------------------------------------------------
def impls_for(op, names=None, pdl_off=False) -> list:
    """The op's implementations as (impl, pdl), filtered by name; ``pdl_off`` adds the PDL-off twin
    of every implementation that launches with PDL (the router ops leave it out by default)."""
    chosen = [(i, p) for i, p in op.IMPLS if names is None or i in names]
    if pdl_off:
        chosen += [(i, False) for i, p in chosen if p and i in op.PDL_IMPLS and (i, False) not in chosen]
    return chosen


def plan(op, pts, impls) -> tuple[list, dict]:
    """``([(point, impl, pdl)], {(impl, reason): [series]})``: what runs, and what is not eligible."""
    unavailable = getattr(op, "unavailable", lambda impl, point: None)
    items, skipped = [], {}
    for point in pts:
        for impl, pdl in impls:
            reason = unavailable(impl, point)
            if reason is None:
                items.append((point, impl, pdl))
            else:
                names = skipped.setdefault((impl, str(reason)), [])
                if op.series(point) not in names:
                    names.append(op.series(point))
    return items, skipped


def print_skipped(skipped: dict) -> None:
    for (impl, reason), names in skipped.items():
        print(f"not timed: {impl} on {', '.join(names)} ({reason})")


def label(op, row) -> str:
    """An implementation's name in tables and legends."""
    pdl_off = row["impl"] in op.PDL_IMPLS and not row["pdl"]
    return row["impl"] + (" PDL off" if pdl_off else "")


def point_key(op, row) -> tuple:
    return tuple(row.get(f) for f in op.POINT)


# -- running ---------------------------------------------------------------------------------------
def device_meta(argv) -> dict:
    """Where and how the run was taken, floors included (measured once, at the start)."""
    meta = timing.device_meta()
    meta.update(arch=environment.device_arch(torch.device("cuda")), python=platform.python_version(),
                command=" ".join(["python", "perf/sweep.py", *argv]), tuning_source=tuning.table()[0])
    return meta


def run(op, items, meta, replays: int, json_path) -> tuple[list, bool]:
    """Times every (point, impl, pdl) of ``items``; rewrites ``json_path`` after each one."""
    rows, ok = [], True
    for n, (point, impl, pdl) in enumerate(items, 1):
        nbytes = op.bytes_per_call(point)
        row = {"op": op.OP, **point, "impl": impl, "pdl": pdl, "cold_us": None, "hot_us": None,
               "floor_us": round(timing.floor_us(nbytes, meta), 3), "bytes": nbytes}
        try:
            r = op.measure(impl, pdl, point, replays)
            row.update(cold_us=round(r["cold_us"], 3), hot_us=round(r["hot_us"], 3),
                       l2_multiple=round(r["l2_multiple"], 3), **({"tier": r["tier"]} if "tier" in r else {}))
        except Exception as e:  # noqa: BLE001 - keep the rest of the sweep; the row says what failed
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            ok = ok and impl in OPTIONAL_IMPLS
        rows.append(row)
        timing.write_results(json_path, meta, derive(op, rows))
        done = (f"cold {row['cold_us']} hot {row['hot_us']}" + (f" (tier {row['tier']})" if "tier" in row else "")
                if "error" not in row else f"FAILED {row['error'][:80]}")
        print(f"[{n}/{len(items)}] {op.series(point)} {op.SIZE}={point[op.SIZE]} {label(op, row)}: {done}, "
              f"floor {row['floor_us']} us", flush=True)
    return rows, ok


def derive(op, rows) -> list:
    """Fills in ``bytes``, ``gbps``, ``pct_of_floor``, ``speedup`` and ``baseline`` (in place)."""
    base = {}
    for name in reversed(op.BASELINES):  # the first baseline measured at a point wins
        base.update({point_key(op, r): (name, r["cold_us"]) for r in rows if r["impl"] == name and r.get("cold_us")})
    for r in rows:
        r.setdefault("bytes", op.bytes_per_call(r))
        if not r.get("cold_us"):
            continue
        r["gbps"] = round(r["bytes"] / r["cold_us"] / 1e3, 1)
        r["pct_of_floor"] = round(100 * r["floor_us"] / r["cold_us"], 1)
        if point_key(op, r) in base:
            name, us = base[point_key(op, r)]
            r["speedup"], r["baseline"] = round(us / r["cold_us"], 3), name
    return rows


def sweep_op(op, pts, impls, meta, replays: int, out_dir: pathlib.Path) -> bool:
    """Plans, times and writes one op's results; False when one of ours (not a peer) failed."""
    items, skipped = plan(op, pts, impls)
    print_skipped(skipped)
    if not items:  # never replace a results file with an empty one
        print(f"{op.OP}: nothing to time")
        return True
    meta = {**meta, "op": op.OP, "replays": replays, "impls": {i: op.DESCRIPTIONS[i] for i, _ in impls},
            "baseline": " else ".join(op.BASELINES), "complete": False,
            "not_timed": {f"{i}: {r}": names for (i, r), names in skipped.items()}}
    json_path = out_dir / f"{op.FILE}.json"
    print(f"{op.OP}: {len(items)} timings -> {json_path}", flush=True)
    rows, ok = run(op, items, meta, replays, json_path)
    if hasattr(op, "extra_meta"):
        try:
            meta.update(op.extra_meta(pts, replays))
        except Exception:  # noqa: BLE001 - the rows are written either way
            traceback.print_exc()
            ok = False
    timing.write_results(json_path, {**meta, "complete": True}, rows)
    draw(json_path)
    print_table(op, rows)
    print(f"wrote {json_path} and {json_path.with_suffix('.csv').name}")
    return ok


def draw(json_path) -> None:
    """The results PNG beside the JSON; matplotlib is optional (``pip install -e .[perf]``)."""
    try:
        import plots

        print(f"wrote {plots.save_png(json_path)}")
    except Exception as e:  # noqa: BLE001 - the results are written; the picture can be redrawn
        if not isinstance(e, ImportError):
            traceback.print_exc()
        print(f"no PNG ({type(e).__name__}: {e}); redraw with: python perf/sweep.py --plot-only {json_path}")


def print_table(op, rows) -> None:
    """Cold us per call, a line per point and a column per implementation; then the targets."""
    labels = list(dict.fromkeys(label(op, r) for r in rows))
    width = max([8, *map(len, labels)])
    by_point = {}
    for r in rows:
        by_point.setdefault(point_key(op, r), {})[label(op, r)] = r
    print(f"\n{'':<24} {op.SIZE:>6} {'floor':>7} " + " ".join(f"{name:>{width}}" for name in labels))
    for cells in by_point.values():
        first = next(iter(cells.values()))
        values = [cells[name].get("cold_us") if name in cells else None for name in labels]
        shown = [f"{v:>{width}.2f}" if v is not None else f"{'ERR' if name in cells else '-':>{width}}"
                 for name, v in zip(labels, values)]
        print(f"{op.series(first):<24} {first[op.SIZE]:>6} {first['floor_us']:>7.2f} " + " ".join(shown))
    print(f"(cold us per call in a CUDA graph; speedups over {' else '.join(op.BASELINES)} are in the JSON)")
    for t in targets.evaluate(op.OP, rows, functools.partial(point_key, op)):
        if t["met"] is not None:
            print(f"target {t['target']} <= {t['bar_us']} us ({t['source']}): {t['measured_us']:.2f} "
                  f"({t['worst_at']}): {'met' if t['met'] else 'MISSED'}")


def load_results(path) -> tuple:
    """``(op module, meta, rows)`` of a results file, with the derived fields filled in; rows of
    the earlier per-op benchmarks are renamed to the sweep's implementation names."""
    data = json.loads(pathlib.Path(path).read_text())
    op = OPS[data["meta"]["op"]]
    normalise = getattr(op, "normalise", lambda row: row)
    return op, data["meta"], derive(op, [normalise(r) for r in data["rows"]])


# -- the tuning table ------------------------------------------------------------------------------
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


def measured_windows(op, rows) -> dict:
    """``{(dtypes, shape): {tier: (lo, hi) or None}}`` from a sweep's rows: the median cold time
    of each tier (CuTe tiers with PDL on, as the dispatcher runs them) per M, through
    ``best_windows``. Every other measured tier gets None (never): a tier the table does not
    name may run at every M. The op's last tier is left out: it takes whatever no window does."""
    times = {}
    for r in rows:
        tier = op.TIERS.get((r["impl"], r["pdl"]))
        if tier is not None and r.get("cold_us"):
            by_m = times.setdefault(op.tuning_key(r), {})
            by_m.setdefault(r[op.SIZE], {}).setdefault(tier, []).append(r["cold_us"])
    order = tiers.op_tiers(op.OP).names()
    out = {}
    for key, by_m in times.items():
        windows = best_windows({m: {t: statistics.median(v) for t, v in ts.items()} for m, ts in by_m.items()})
        never = set(op.TIERS.values()) - set(windows) - {order[-1]}
        out[key] = {**windows, **{t: None for t in order if t in never}}
    return out


def dump_table(source: str, entries: list) -> str:
    """dispatch/tuning.json's text: one entry per line."""
    lines = ",\n".join(f"    {json.dumps(e)}" for e in entries)
    return f'{{\n  "source": {json.dumps(source)},\n  "entries": [\n{lines}\n  ]\n}}\n'


def write_tuning(result_paths, table_path=tuning.TABLE_PATH) -> list:
    """Rewrites ``table_path`` with the windows measured in ``result_paths``: an entry per
    (op, arch, dtypes, shape) measured replaces the table's (in place) or is added; the
    others stay. Returns the written entries."""
    table_path = pathlib.Path(table_path)
    text = table_path.read_text()
    tuning.parse(text, str(table_path))  # never merge into a malformed table
    measured, sources = {}, []
    for path in result_paths:
        op, meta, rows = load_results(path)
        if not meta.get("arch"):
            raise ValueError(f"{path}: meta has no 'arch' (an older benchmark wrote it); re-run perf/sweep.py")
        for (dtypes, shape), windows in measured_windows(op, rows).items():
            entry = {"op": op.OP, "arch": meta["arch"], "dtypes": list(dtypes), "shape": list(shape),
                     "windows": {t: None if w is None else [w[0], w[1]] for t, w in windows.items()}}
            measured[(op.OP, meta["arch"], tuple(dtypes), tuple(shape))] = entry
        sources.append(f"{op.OP} from {_relative(path)} ({meta.get('device')}, {str(meta.get('date'))[:10]})")

    def key(e):
        return e["op"], e["arch"], tuple(e["dtypes"]), tuple(e["shape"])

    old = json.loads(text)["entries"]
    entries = [measured.get(key(e), e) for e in old]
    entries += [e for k, e in measured.items() if k not in {key(o) for o in old}]
    source = "measured: the fastest tier per M (cold, per call in a CUDA graph, PDL on) of " + "; ".join(sources)
    if any(key(e) not in measured for e in old):
        source += "; entries for problems not measured there are kept from the previous table"
    table_path.write_text(dump_table(source, entries))
    tuning.parse(table_path.read_text(), str(table_path))
    return list(measured.values())


def _relative(path) -> str:
    path = pathlib.Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- command line ----------------------------------------------------------------------------------
def _list(text: str) -> list:
    return [s.strip() for s in text.split(",") if s.strip()]


def _ints(text: str) -> list:
    return [int(s) for s in _list(text)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", choices=[*OPS, "all"], help="the op to sweep (all: each in turn)")
    p.add_argument("--preset", type=_list, help="comma-separated presets (default: each op's own set; "
                   "router_gemm: every preset, norm_router_gemm: the norm+router ones)")
    p.add_argument("--shape", type=_list, help="comma-separated shapes instead of presets: HxE (router ops), "
                   "H (silu_mul_quant_fp8), k (pack_topk)")
    p.add_argument("--m", type=_ints, help="comma-separated M (T for silu_mul_quant_fp8 and pack_topk)")
    p.add_argument("--quick", action="store_true", help="a smoke run: a few points per op (router_gemm: "
                   f"{', '.join(bench_router_gemm.QUICK_PRESETS)} at M={bench_router_gemm.QUICK_SIZES})")
    p.add_argument("--impls", type=_list, help="comma-separated subset of the implementations")
    p.add_argument("--pdl-off", action="store_true", help="also time the PDL implementations of the router "
                   "ops with PDL off (silu_mul_quant_fp8 and pack_topk always do)")
    p.add_argument("--replays", type=int, default=20, help="timed graph replays per point (>= 20)")
    p.add_argument("--out", type=pathlib.Path, help="output directory, e.g. perf/results/h100")
    p.add_argument("--dry-run", action="store_true", help="print what would be timed and exit (no GPU needed)")
    p.add_argument("--write-tuning", nargs="+", metavar="JSON", type=pathlib.Path,
                   help="write the dispatcher's tuning table from these results (no GPU needed)")
    p.add_argument("--table", type=pathlib.Path, default=tuning.TABLE_PATH, help="the table --write-tuning "
                   "rewrites (default: dispatch/tuning.json)")
    p.add_argument("--plot-only", nargs="+", metavar="JSON", type=pathlib.Path,
                   help="redraw the PNG of these results (no GPU needed)")
    args = p.parse_args(argv)
    if not (args.op or args.write_tuning or args.plot_only):
        p.error("give --op, --write-tuning or --plot-only")
    if args.op and not (args.dry_run or args.plot_only or args.write_tuning) and args.out is None:
        p.error("give --out DIR for the results (perf/results/h100 holds the committed ones)")
    known = {i for op in OPS.values() for i, _ in op.IMPLS}
    if args.impls and set(args.impls) - known:
        p.error(f"unknown --impls {', '.join(sorted(set(args.impls) - known))}; choose from {', '.join(sorted(known))}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.write_tuning:
        for e in write_tuning(args.write_tuning, args.table):
            print(f"{e['op']} {e['arch']} {'/'.join(e['dtypes'])} {'x'.join(map(str, e['shape']))}: {e['windows']}")
        print(f"wrote {args.table}")
        return 0
    if args.plot_only:
        for path in args.plot_only:
            draw(path)
        return 0
    ops = list(OPS.values()) if args.op == "all" else [OPS[args.op]]
    runs = [(op, op.points(args.preset, args.shape, args.m, args.quick), impls_for(op, args.impls, args.pdl_off))
            for op in ops]
    if args.dry_run:
        if not torch.cuda.is_available():
            print(f"no GPU: eligibility as on an {PLAN_ARCH} device")
            environment.device_arch = lambda device: PLAN_ARCH  # the dispatcher's one source of the arch
        for op, pts, impls in runs:
            items, skipped = plan(op, pts, impls)
            print_skipped(skipped)
            for n, (point, impl, pdl) in enumerate(items, 1):
                print(f"[{n}/{len(items)}] {op.OP} {op.series(point)} {op.SIZE}={point[op.SIZE]} "
                      f"{label(op, {'impl': impl, 'pdl': pdl})}")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: only --dry-run, --write-tuning and --plot-only work here", file=sys.stderr)
        return 2
    meta = device_meta(argv)
    print(f"{meta['device']} ({meta['arch']}): copy {meta['copy_gbps']} GB/s, graph launch floor "
          f"{meta['graph_launch_floor_us']} us", flush=True)
    ok = True
    for op, pts, impls in runs:
        ok = sweep_op(op, pts, impls, meta, max(args.replays, 20), args.out) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
