"""Performance sweep: op x preset (or shape) x M (or T) x implementation x mode, timed the one way
this project times (``cute_kernels.timing``: cold and hot, per call inside a CUDA graph, median
of the replays; docs/benchmarking.md), torch and the dispatcher's tiers side by side in the same run.

    python perf/sweep.py --op router_gemm --out perf/results/h100            # GPU
    python perf/sweep.py --op all --quick --out /tmp/quick                   # smoke run (GPU)
    python perf/sweep.py --op router_gemm --dry-run                          # the plan (no GPU)
    python perf/sweep.py --write-tuning perf/results/h100/router_gemm.json   # dispatch/tuning.json (no GPU)
    python perf/sweep.py --plot-only perf/results/h100/router_gemm.json      # redraw the PNG (no GPU)

Modes (``--modes``; perf/bench.py): ``b2b`` (the op after itself, PDL on), ``alone`` (PDL off)
and ``chain`` (the op after a one-kernel torch producer writing its main input, the producers'
own graph subtracted). Default: each op's own (b2b and chain for the router ops, b2b and alone
for the others); ``--pdl-off`` adds alone.

Writes <out>/<op>.json (``{"meta", "rows"}`` as docs/benchmarking.md describes; rewritten after
every point, so an interrupted run keeps what it measured) and the rows as CSV beside it, then
<op>.png. ``meta``: device, arch, clocks, driver, CUDA, torch and DSL versions, date, the copy
bandwidth and graph launch floor measured at the start of the run. A row: the point's fields,
``impl``, ``mode``, ``pdl``, ``cold_us``, ``hot_us``, ``floor_us`` (launch floor + bytes / copy
bandwidth), ``producer_us`` (chain rows: the producer's own cold time), ``bytes``, ``gbps``
(bytes / cold time), ``pct_of_floor`` (floor / cold time, in %), ``speedup`` (the ``baseline``
implementation's cold time in the same kind of graph / this one's). An implementation that fails
at a point leaves ``error`` in its row and the sweep goes on; the exit status is then 1 (0 where
only a peer failed).

Each op's bench is a ``perf.bench.Bench`` in perf/benches/<op>.py; perf/results.py reads result
files back (for the plots, the notebooks and the tuning table, whose writer is in
dispatch/tuning.py).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import platform
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: perf, cute_kernels and dispatch live here
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import timing  # noqa: E402
from dispatch import environment, tuning  # noqa: E402
from perf import results, targets  # noqa: E402
from perf.bench import ALONE, CHAIN, MODES  # noqa: E402
from perf.benches import BENCHES, router_gemm  # noqa: E402

PLAN_ARCH = "sm_90a"  # what --dry-run plans for on a machine without a GPU


# -- the plan --------------------------------------------------------------------------------------
def impls_for(bench, names=None) -> list:
    """The bench's implementations, filtered by name."""
    return [i for i in bench.impls if names is None or i.name in names]


def modes_for(bench, modes=None, pdl_off=False) -> tuple:
    """The modes to time: ``modes`` (else the bench's own), with alone added by ``pdl_off``."""
    chosen = tuple(modes or bench.modes)
    return chosen + (ALONE,) if pdl_off and ALONE not in chosen else chosen


def plan(bench, pts, impls, modes) -> tuple[list, dict]:
    """``([(point, impl, mode)], {(impl name, reason): [series]})``: what runs, in the order it
    runs (an implementation's modes together, so it compiles once), and what is not eligible.
    Each implementation runs in those of ``modes`` it has (``Impl.modes``)."""
    items, skipped = [], {}
    for point in pts:
        for impl in impls:
            reason = bench.unavailable(impl.name, point)
            if reason is None:
                items += [(point, impl, mode) for mode in impl.modes(modes)]
            else:
                names = skipped.setdefault((impl.name, str(reason)), [])
                if bench.series(point) not in names:
                    names.append(bench.series(point))
    return items, skipped


def print_skipped(skipped: dict) -> None:
    for (impl, reason), names in skipped.items():
        print(f"not timed: {impl} on {', '.join(names)} ({reason})")


# -- running ---------------------------------------------------------------------------------------
def device_meta(argv) -> dict:
    """Where and how the run was taken, floors included (measured once, at the start)."""
    meta = timing.device_meta()
    meta.update(arch=environment.device_arch(torch.device("cuda")), python=platform.python_version(),
                command=" ".join(["python", "perf/sweep.py", *argv]), tuning_source=tuning.table()[0])
    return meta


def new_row(bench, point, impl, mode, meta) -> dict:
    """A row before its timing: the point, what is timed and how, the floor and the bytes."""
    nbytes = bench.bytes_per_call(point)
    return {"op": bench.op, **point, "impl": impl.name, "mode": mode, "pdl": impl.launches_with_pdl(mode),
            "cold_us": None, "hot_us": None, "floor_us": round(timing.floor_us(nbytes, meta), 3), "bytes": nbytes}


def measure(bench, point, impl, mode, replays: int) -> dict:
    """Times ``impl`` at ``point`` in ``mode``: ``timing.time_per_call`` over the bench's case,
    with the chain's producer writing the bench's main input in chain mode."""
    case = bench.case(impl.name, impl.launches_with_pdl(mode), point)
    producer = timing.mul_producer(bench.main_index) if mode == CHAIN else None
    r = timing.time_per_call(case.make, case.call, bytes_per_call=bench.bytes_per_call(point), replays=replays,
                             poison=case.poison, check=case.check, producer=producer)
    return {**r, **({"tier": case.tier} if case.tier else {})}


def run(bench, items, meta, replays: int, json_path) -> tuple[list, bool]:
    """Times every (point, impl, mode) of ``items``; rewrites ``json_path`` after each one."""
    rows, ok = [], True
    for n, (point, impl, mode) in enumerate(items, 1):
        row = new_row(bench, point, impl, mode, meta)
        try:
            r = measure(bench, point, impl, mode, replays)
            row.update({k: round(r[k], 3) for k in ("cold_us", "hot_us", "l2_multiple", "producer_us") if k in r})
            row.update({"tier": r["tier"]} if "tier" in r else {})
        except Exception as e:  # noqa: BLE001 - keep the rest of the sweep; the row says what failed
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            ok = ok and impl.peer
        rows.append(row)
        timing.write_results(json_path, meta, results.derive(bench, rows))
        done = (f"cold {row['cold_us']} hot {row['hot_us']}" + (f" (tier {row['tier']})" if "tier" in row else "")
                if "error" not in row else f"FAILED {row['error'][:80]}")
        print(f"[{n}/{len(items)}] {bench.series(point)} {bench.size}={point[bench.size]} {results.label(row)}: "
              f"{done}, floor {row['floor_us']} us", flush=True)
    return rows, ok


def sweep_op(bench, pts, impls, modes, meta, replays: int, out_dir: pathlib.Path) -> bool:
    """Plans, times and writes one op's results; False when one of ours (not a peer) failed."""
    items, skipped = plan(bench, pts, impls, modes)
    print_skipped(skipped)
    if not items:  # never replace a results file with an empty one
        print(f"{bench.op}: nothing to time")
        return True
    meta = {**meta, "op": bench.op, "replays": replays, "impls": {i.name: i.description for i in impls},
            "modes": list(modes), "chain_producer": f"torch.mul(h, one, out={bench.main_input}), h a copy of it",
            "baseline": " else ".join(bench.baselines), "complete": False,
            "not_timed": {f"{i}: {r}": names for (i, r), names in skipped.items()}}
    json_path = out_dir / bench.file
    print(f"{bench.op}: {len(items)} timings -> {json_path}", flush=True)
    rows, ok = run(bench, items, meta, replays, json_path)
    if bench.extra_meta is not None:
        try:
            meta.update(bench.extra_meta(pts, replays))
        except Exception:  # noqa: BLE001 - the rows are written either way
            traceback.print_exc()
            ok = False
    timing.write_results(json_path, {**meta, "complete": True}, rows)
    draw(json_path)
    print_table(bench, rows)
    print(f"wrote {json_path} and {json_path.with_suffix('.csv').name}")
    return ok


def draw(json_path) -> None:
    """The results PNG beside the JSON; matplotlib is optional (``pip install -e .[perf]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window: the same pixels on every machine
        from perf import plots

        print(f"wrote {plots.save_png(json_path)}")
    except Exception as e:  # noqa: BLE001 - the results are written; the picture can be redrawn
        if not isinstance(e, ImportError):
            traceback.print_exc()
        print(f"no PNG ({type(e).__name__}: {e}); redraw with: python perf/sweep.py --plot-only {json_path}")


def print_table(bench, rows) -> None:
    """Cold us per call, a line per point and a column per implementation and mode; then the targets."""
    labels = list(dict.fromkeys(results.label(r) for r in rows))
    width = max([8, *map(len, labels)])
    by_point = {}
    for r in rows:
        by_point.setdefault(results.point_key(bench, r), {})[results.label(r)] = r
    print(f"\n{'':<24} {bench.size:>6} {'floor':>7} " + " ".join(f"{name:>{width}}" for name in labels))
    for cells in by_point.values():
        first = next(iter(cells.values()))
        values = [cells[name].get("cold_us") if name in cells else None for name in labels]
        shown = [f"{v:>{width}.2f}" if v is not None else f"{'ERR' if name in cells else '-':>{width}}"
                 for name, v in zip(labels, values)]
        print(f"{bench.series(first):<24} {first[bench.size]:>6} {first['floor_us']:>7.2f} " + " ".join(shown))
    print(f"(cold us per call in a CUDA graph; speedups over {' else '.join(bench.baselines)} are in the JSON)")
    for t in targets.evaluate(bench.op, rows, functools.partial(results.point_key, bench)):
        if t["met"] is not None:
            print(f"target {t['target']} {t['mode']} <= {t['bar_us']} us ({t['source']}): {t['measured_us']:.2f} "
                  f"({t['worst_at']}): {'met' if t['met'] else 'MISSED'}")


def write_tuning(result_paths, table_path=tuning.TABLE_PATH) -> list:
    """``dispatch.tuning.write_tuning`` over these results files."""
    return tuning.write_tuning([results.measured(path) for path in result_paths], table_path)


# -- command line ----------------------------------------------------------------------------------
def _list(text: str) -> list:
    return [s.strip() for s in text.split(",") if s.strip()]


def _ints(text: str) -> list:
    return [int(s) for s in _list(text)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", choices=[*BENCHES, "all"], help="the op to sweep (all: each in turn)")
    p.add_argument("--preset", type=_list, help="comma-separated presets (default: each op's own set; "
                   "router_gemm: every preset, norm_router_gemm: the norm+router ones)")
    p.add_argument("--shape", type=_list, help="comma-separated shapes instead of presets: HxE (router ops), "
                   "H (silu_mul_quant_fp8), k (pack_topk)")
    p.add_argument("--m", type=_ints, help="comma-separated M (T for silu_mul_quant_fp8 and pack_topk)")
    p.add_argument("--quick", action="store_true", help="a smoke run: a few points per op (router_gemm: "
                   f"{', '.join(router_gemm.QUICK_PRESETS)} at M={router_gemm.QUICK_SIZES})")
    p.add_argument("--impls", type=_list, help="comma-separated subset of the implementations")
    p.add_argument("--modes", type=_list, help=f"comma-separated timing modes of {', '.join(MODES)} (default: "
                   "each op's own: b2b,chain for the router ops, b2b,alone for the others)")
    p.add_argument("--pdl-off", action="store_true", help="add mode alone: the PDL implementations with PDL off "
                   "(the router ops leave it out by default)")
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
    known = {i.name for bench in BENCHES.values() for i in bench.impls}
    if args.impls and set(args.impls) - known:
        p.error(f"unknown --impls {', '.join(sorted(set(args.impls) - known))}; choose from {', '.join(sorted(known))}")
    if args.modes and set(args.modes) - set(MODES):
        p.error(f"unknown --modes {', '.join(sorted(set(args.modes) - set(MODES)))}; choose from {', '.join(MODES)}")
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
    benches = list(BENCHES.values()) if args.op == "all" else [BENCHES[args.op]]
    runs = [(bench, bench.points(args.preset, args.shape, args.m, args.quick), impls_for(bench, args.impls),
             modes_for(bench, args.modes, args.pdl_off)) for bench in benches]
    if args.dry_run:
        if not torch.cuda.is_available():
            print(f"no GPU: eligibility as on an {PLAN_ARCH} device")
            environment.device_arch = lambda device: PLAN_ARCH  # the dispatcher's one source of the arch
        for bench, pts, impls, modes in runs:
            items, skipped = plan(bench, pts, impls, modes)
            print_skipped(skipped)
            for n, (point, impl, mode) in enumerate(items, 1):
                print(f"[{n}/{len(items)}] {bench.op} {bench.series(point)} {bench.size}={point[bench.size]} "
                      f"{impl.name} {mode}")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: only --dry-run, --write-tuning and --plot-only work here", file=sys.stderr)
        return 2
    meta = device_meta(argv)
    print(f"{meta['device']} ({meta['arch']}): copy {meta['copy_gbps']} GB/s, graph launch floor "
          f"{meta['graph_launch_floor_us']} us", flush=True)
    ok = True
    for bench, pts, impls, modes in runs:
        ok = sweep_op(bench, pts, impls, modes, meta, max(args.replays, 20), args.out) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
