"""Top-k pack benchmark: cute_kernels (PDL on and off) against the torch composite.

    python perf/bench_pack_topk.py --out perf/results/h100            # full sweep (GPU)
    python perf/bench_pack_topk.py --out /tmp/x --quick               # smoke run (GPU)
    python perf/bench_pack_topk.py --plot-only perf/results/h100/pack_topk.json   # no GPU

Writes <out>/pack_topk.json (+ .csv) and <out>/pack_topk.png; prints a table last.
"""

import json
import pathlib
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import timing  # noqa: E402

OP = "pack_topk"
K = 8
NUM_IDS = 256  # ids drawn from [0, NUM_IDS), as with a 256-expert router
T_VALUES = [1, 4, 16, 64, 256, 1024, 4096, 16384]
T_QUICK = [1, 64, 4096]
DTYPE_PAIRS = [("int32", "float32"), ("int64", "float32"), ("int32", "bfloat16")]
IMPLS = [("cute_kernels", True), ("cute_kernels", False), ("torch", False)]  # (impl, pdl)
# Any packed value has the id in its top 16 bits; ids < 256 keep it non-negative, so -1 can
# never be a real output and a slot still holding it means the kernel did not write there.
SENTINEL = -1


def bytes_per_call(T: int, ids_dtype: str, weights_dtype: str) -> int:
    ids = torch.empty((), dtype=getattr(torch, ids_dtype)).element_size()
    w = torch.empty((), dtype=getattr(torch, weights_dtype)).element_size()
    return T * K * (ids + w + 4)  # ids read + weights read + int32 out written


def _make_inputs(T, ids_dtype, weights_dtype, with_out):
    def make():
        ids = torch.randint(0, NUM_IDS, (T, K), dtype=getattr(torch, ids_dtype), device="cuda")
        weights = torch.rand((T, K), dtype=getattr(torch, weights_dtype), device="cuda")
        if not with_out:
            return ids, weights
        return ids, weights, torch.empty((T, K), dtype=torch.int32, device="cuda")
    return make


def measure(impl: str, pdl: bool, T: int, ids_dtype: str, weights_dtype: str, replays: int) -> dict:
    import cute_kernels
    from cute_kernels import reference

    if impl == "cute_kernels":
        make = _make_inputs(T, ids_dtype, weights_dtype, with_out=True)

        def call(ids, weights, out):
            cute_kernels.pack_topk(ids, weights, out=out, pdl=pdl)

        def poison(inputs):
            inputs[2].fill_(SENTINEL)

        def check(inputs):
            ids, weights, out = inputs
            if not torch.equal(out, reference.pack_topk(ids, weights)):
                bad = (out != reference.pack_topk(ids, weights)).sum().item()
                raise AssertionError(f"{OP} T={T} {ids_dtype}/{weights_dtype} pdl={pdl}: {bad} wrong values")
    else:
        # The reference is the spec and allocates its own output: nothing to poison or check.
        make = _make_inputs(T, ids_dtype, weights_dtype, with_out=False)
        call, poison, check = reference.pack_topk, None, None

    r = timing.time_per_call(make, call, bytes_per_call=bytes_per_call(T, ids_dtype, weights_dtype),
                             replays=replays, poison=poison, check=check)
    return r


def eager_overheads() -> dict:
    """Host cost per eager call at T = 1 (the decode case)."""
    import cute_kernels
    from cute_kernels import reference

    ids, weights, out = _make_inputs(1, "int32", "float32", with_out=True)()
    return {
        "cute_kernels": round(timing.eager_overhead_us(
            lambda i, w, o: cute_kernels.pack_topk(i, w, out=o, pdl=True), (ids, weights, out)), 2),
        "torch": round(timing.eager_overhead_us(reference.pack_topk, (ids, weights)), 2),
    }


def run(out_dir: pathlib.Path, t_values, impls, replays: int) -> bool:
    meta = timing.device_meta()
    meta.update({"op": OP, "k": K, "num_ids": NUM_IDS, "replays": replays,
                 "cold": "R calls per graph, R = clamp(ceil(3 * L2 / bytes), 64, 2048); below 3 * L2 / 2048 "
                         "bytes per call (77 KB on H100) the rotation covers less than 3x L2 (see l2_multiple)"})
    print(f"{meta['device']}: copy {meta['copy_gbps']} GB/s, graph launch floor {meta['graph_launch_floor_us']} us",
          flush=True)
    rows, ok = [], True
    for ids_dtype, weights_dtype in DTYPE_PAIRS:
        for T in t_values:
            nbytes = bytes_per_call(T, ids_dtype, weights_dtype)
            for impl, pdl in impls:
                row = {"op": OP, "T": T, "k": K, "ids_dtype": ids_dtype, "weights_dtype": weights_dtype,
                       "impl": impl, "pdl": pdl, "cold_us": None, "hot_us": None,
                       "floor_us": round(timing.floor_us(nbytes, meta), 3)}
                try:
                    r = measure(impl, pdl, T, ids_dtype, weights_dtype, replays)
                    row.update(cold_us=round(r["cold_us"], 3), hot_us=round(r["hot_us"], 3),
                               l2_multiple=round(r["l2_multiple"], 3))
                except Exception as e:  # keep the rest of the sweep; the row says what failed
                    traceback.print_exc()
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                    ok = False
                rows.append(row)
                print(f"  {ids_dtype}/{weights_dtype} T={T:>5} {impl:>12} pdl={pdl!s:5} "
                      f"cold {row['cold_us']} hot {row['hot_us']} floor {row['floor_us']}", flush=True)
    try:
        meta["eager_overhead_us"] = eager_overheads()
    except Exception:
        traceback.print_exc()
        ok = False

    json_path = out_dir / f"{OP}.json"
    timing.write_results(json_path, meta, rows)
    try:
        plot(json_path, out_dir / f"{OP}.png")
    except Exception:
        traceback.print_exc()
    print_table(rows)
    print(f"eager overhead per call (us): {meta.get('eager_overhead_us')}")
    print(f"wrote {json_path}")
    return ok


def _by_key(rows):
    return {(r["ids_dtype"], r["weights_dtype"], r["T"], r["impl"], r["pdl"]): r for r in rows}


def print_table(rows) -> None:
    def fmt(v):
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    by = _by_key(rows)
    print(f"\n{'T':>6} {'ids/weights':>16} {'pdl cold':>8} {'pdl hot':>8} {'nopdl':>8} {'torch':>8} "
          f"{'floor':>8} {'speedup':>8}")
    for ids_dtype, weights_dtype in DTYPE_PAIRS:
        for T in sorted({r["T"] for r in rows}):
            on = by.get((ids_dtype, weights_dtype, T, "cute_kernels", True), {})
            off = by.get((ids_dtype, weights_dtype, T, "cute_kernels", False), {})
            ref = by.get((ids_dtype, weights_dtype, T, "torch", False), {})
            if not (on or off or ref):
                continue
            floor = (on or off or ref).get("floor_us")
            speedup = (ref["cold_us"] / on["cold_us"]) if ref.get("cold_us") and on.get("cold_us") else None
            print(f"{T:>6} {ids_dtype + '/' + weights_dtype:>16} {fmt(on.get('cold_us'))} {fmt(on.get('hot_us'))} "
                  f"{fmt(off.get('cold_us'))} {fmt(ref.get('cold_us'))} {fmt(floor)} {fmt(speedup)}")
    print("(cold us per call in a CUDA graph; speedup = torch cold / cute pdl-on cold)")


def plot(results_json, png_path) -> None:
    """Cold time vs T per dtype pair; works from a saved JSON without a GPU."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(pathlib.Path(results_json).read_text())
    meta, rows = data["meta"], data["rows"]
    pairs = [p for p in DTYPE_PAIRS if any((r["ids_dtype"], r["weights_dtype"]) == p for r in rows)]
    fig, axes = plt.subplots(1, max(len(pairs), 1), figsize=(5 * max(len(pairs), 1), 4), sharey=True,
                             squeeze=False)
    lines = [("cute_kernels", True, "cold_us", "cute_kernels PDL on", "C0", "-"),
             ("cute_kernels", True, "hot_us", "cute_kernels PDL on (hot)", "C0", ":"),
             ("cute_kernels", False, "cold_us", "cute_kernels PDL off", "C1", "-"),
             ("torch", False, "cold_us", "torch composite", "C2", "-")]
    for ax, (ids_dtype, weights_dtype) in zip(axes[0], pairs):
        sel = sorted((r for r in rows if (r["ids_dtype"], r["weights_dtype"]) == (ids_dtype, weights_dtype)),
                     key=lambda r: r["T"])
        for impl, pdl, key, label, color, style in lines:
            pts = [(r["T"], r[key]) for r in sel if r["impl"] == impl and r["pdl"] == pdl and r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=color, marker="o", markersize=3, label=label)
        floor = sorted({(r["T"], r["floor_us"]) for r in sel})
        if floor:
            ax.plot(*zip(*floor), "--", color="black", label="floor (launch + bytes / copy BW)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("T (tokens)")
        ax.set_title(f"ids {ids_dtype}, weights {weights_dtype}, k={meta.get('k', K)}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("us per call (CUDA graph, median)")
    axes[0][0].legend(fontsize=8)
    timing.save_figure(fig, png_path, f"{OP} on {meta.get('device', '?')} ({str(meta.get('date', ''))[:10]})")


def main(argv=None) -> int:
    return timing.bench_main(__doc__, impls=IMPLS, run=run, plot=plot, full=T_VALUES, quick=T_QUICK, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
