"""SiLU*Mul + FP8 group-quant benchmark: cute_kernels (PDL on and off), torch eager, torch.compile.

    python perf/bench_silu_mul_quant.py --out perf/results/h100          # full sweep (GPU)
    python perf/bench_silu_mul_quant.py --out /tmp/x --quick             # smoke run (GPU)
    python perf/bench_silu_mul_quant.py --plot-only perf/results/h100/silu_mul_quant.json   # no GPU

Writes <out>/silu_mul_quant.json (+ .csv) and <out>/silu_mul_quant.png; prints a table last.
torch eager runs ``torch_baseline`` below (the spec's fp32 math without its argument checks, and
capturable in a CUDA graph); torch.compile compiles the same function.
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

OP = "silu_mul_quant_fp8"
FILE = "silu_mul_quant"
FP8_MAX = 448.0
# (T, H, group_size, scale_layout)
MAIN = [(t, 2048, 128, "row") for t in (16, 256, 4096, 16384, 32768)]
SWEEP = MAIN + [(t, h, 128, "row") for h in (1536, 2560, 7168) for t in (16, 4096)] + \
    [(t, 2048, 64, "row") for t in (16, 4096)] + [(t, 2048, 128, "col") for t in (16, 4096)]
QUICK = [(16, 2048, 128, "row"), (4096, 2048, 128, "row"), (4096, 2048, 64, "col")]
IMPLS = [("cute_kernels", True), ("cute_kernels", False), ("torch", False), ("torch_compile", False)]
TARGETS_US = {16: 2.0, 4096: 16.0, 32768: 125.0}  # H = 2048, group 128, row layout


def bytes_per_call(T, H, G) -> int:
    return T * 2 * H * 2 + T * H + T * (H // G) * 4  # x read + q written + fp32 scales written


def torch_baseline(x, group_size: int, scale_layout: str):
    """Plain fp32 torch, as serving stacks write it; the spec's expressions."""
    T, H = x.shape[0], x.shape[1] // 2
    g, u = x[:, :H].float(), x[:, H:].float()
    y = (g / (1.0 + torch.exp(-g)) * u).view(T, H // group_size, group_size)
    scale = y.abs().amax(dim=-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (y / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(T, H)
    scale = scale.squeeze(-1)
    return q, (scale if scale_layout == "row" else scale.t().contiguous().t())


_compiled = None


def compiled_baseline():
    global _compiled
    if _compiled is None:
        import torch._dynamo
        # One specialisation per (T, H, G, layout) point: keep them all rather than falling back.
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 1024)
        _compiled = torch.compile(torch_baseline, dynamic=False)
    return _compiled


def check_against_spec(x, q, s, G, layout, what):
    from cute_kernels import reference

    want_q, want_s = reference.silu_mul_quant_fp8(x, G, scale_layout=layout)
    if not torch.allclose(s, want_s, rtol=1e-6, atol=0.0, equal_nan=True):
        raise AssertionError(f"{what}: scales differ from the spec")
    gq, wq = q.double(), want_q.double()
    step = torch.exp2(torch.floor(torch.log2(torch.maximum(gq.abs(), wq.abs()).clamp_min(2.0**-6))) - 3)
    if not (torch.equal(gq.isnan(), wq.isnan()) and ((gq - wq).abs() <= step)[~wq.isnan()].all()):
        raise AssertionError(f"{what}: q differs from the spec by more than one e4m3 step (or was not written)")


def measure(impl: str, pdl: bool, T: int, H: int, G: int, layout: str, replays: int) -> dict:
    import cute_kernels

    what = f"{OP} T={T} H={H} G={G} {layout} {impl} pdl={pdl}"

    def make_x():
        return torch.randn(T, 2 * H, device="cuda", dtype=torch.bfloat16) * 2

    if impl == "cute_kernels":
        def make():
            s = torch.empty_strided((T, H // G), (H // G, 1) if layout == "row" else (1, T), device="cuda")
            return make_x(), torch.empty(T, H, dtype=torch.float8_e4m3fn, device="cuda"), s

        def call(x, q, s):
            cute_kernels.silu_mul_quant_fp8(x, G, scale_layout=layout, out=q, scales=s, pdl=pdl)

        def poison(inputs):
            inputs[1].view(torch.uint8).fill_(0x7F)  # fp8 NaN
            inputs[2].fill_(float("nan"))

        def check(inputs):
            check_against_spec(*inputs, G, layout, what)
    else:
        fn = torch_baseline if impl == "torch" else compiled_baseline()

        def make():
            return (make_x(),)

        def call(x):
            fn(x, G, layout)

        if impl == "torch_compile":  # compile before timing; a failure raises here and is recorded
            x0 = make_x()
            q, s = fn(x0, G, layout)
            check_against_spec(x0, q, s, G, layout, what)
        poison = check = None

    return timing.time_per_call(make, call, bytes_per_call=bytes_per_call(T, H, G), replays=replays,
                                poison=poison, check=check)


def run(out_dir: pathlib.Path, points, impls, replays: int) -> bool:
    meta = timing.device_meta()
    meta.update({"op": OP, "x_dtype": "bfloat16", "replays": replays,
                 "bytes": "T * 2H * 2 (x) + T * H (q) + T * H / G * 4 (scales)",
                 "torch": "torch_baseline eager (fp32 torch, the spec's math)",
                 "torch_compile": "torch.compile(torch_baseline), mode default, dynamic=False"})
    print(f"{meta['device']}: copy {meta['copy_gbps']} GB/s, graph launch floor {meta['graph_launch_floor_us']} us",
          flush=True)
    rows, ok = [], True
    for T, H, G, layout in points:
        for impl, pdl in impls:
            row = {"op": OP, "T": T, "H": H, "group_size": G, "scale_layout": layout, "ue8m0": False,
                   "impl": impl, "pdl": pdl, "cold_us": None, "hot_us": None,
                   "floor_us": round(timing.floor_us(bytes_per_call(T, H, G), meta), 3)}
            try:
                r = measure(impl, pdl, T, H, G, layout, replays)
                row.update(cold_us=round(r["cold_us"], 3), hot_us=round(r["hot_us"], 3),
                           l2_multiple=round(r["l2_multiple"], 3))
            except Exception as e:  # keep the rest of the sweep; the row says what failed
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {e}"[:300]
                ok = ok and impl == "torch_compile"  # a torch.compile failure is recorded, not ours
            rows.append(row)
            print(f"  T={T:>6} H={H:>5} G={G:>3} {layout} {impl:>13} pdl={pdl!s:5} "
                  f"cold {row['cold_us']} hot {row['hot_us']} floor {row['floor_us']}", flush=True)

    json_path = out_dir / f"{FILE}.json"
    timing.write_results(json_path, meta, rows)
    try:
        plot(json_path, out_dir / f"{FILE}.png")
    except Exception:
        traceback.print_exc()
    print_table(rows)
    print(f"wrote {json_path}")
    return ok


def _by_key(rows):
    return {(r["T"], r["H"], r["group_size"], r["scale_layout"], r["impl"], r["pdl"]): r for r in rows}


def print_table(rows) -> None:
    def fmt(v):
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    by = _by_key(rows)
    print(f"\n{'T':>6} {'H':>5} {'G':>3} {'lay':>3} {'pdl cold':>8} {'pdl hot':>8} {'nopdl':>8} {'torch':>8} "
          f"{'compile':>8} {'floor':>8} {'vs comp':>8} {'target':>8}")
    for T, H, G, layout in dict.fromkeys((r["T"], r["H"], r["group_size"], r["scale_layout"]) for r in rows):
        get = lambda impl, pdl: by.get((T, H, G, layout, impl, pdl), {})  # noqa: E731
        on, off, eager, comp = get("cute_kernels", True), get("cute_kernels", False), get("torch", False), \
            get("torch_compile", False)
        floor = (on or off or eager or comp).get("floor_us")
        speedup = comp["cold_us"] / on["cold_us"] if comp.get("cold_us") and on.get("cold_us") else None
        target = ""
        if (H, G, layout) == (2048, 128, "row") and T in TARGETS_US:
            met = on.get("cold_us") is not None and on["cold_us"] <= TARGETS_US[T]
            target = f"<= {TARGETS_US[T]:g} {'ok' if met else 'MISS'}"
        print(f"{T:>6} {H:>5} {G:>3} {layout:>3} {fmt(on.get('cold_us'))} {fmt(on.get('hot_us'))} "
              f"{fmt(off.get('cold_us'))} {fmt(eager.get('cold_us'))} {fmt(comp.get('cold_us'))} {fmt(floor)} "
              f"{fmt(speedup)} {target:>8}")
    print("(cold us per call in a CUDA graph; vs comp = torch.compile cold / cute pdl-on cold; "
          "target: cute pdl-on cold, H=2048 G=128 row)")


def plot(results_json, png_path) -> None:
    """H = 2048 (G = 128, row): time vs T per impl with the floor, and speedup over torch.compile."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(pathlib.Path(results_json).read_text())
    meta, rows = data["meta"], data["rows"]
    sel = sorted((r for r in rows if (r["H"], r["group_size"], r["scale_layout"]) == (2048, 128, "row")),
                 key=lambda r: r["T"])
    lines = [("cute_kernels", True, "cute_kernels PDL on", "C0"), ("cute_kernels", False, "cute_kernels PDL off", "C1"),
             ("torch", False, "torch eager", "C2"), ("torch_compile", False, "torch.compile", "C3")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    comp = {r["T"]: r["cold_us"] for r in sel if r["impl"] == "torch_compile" and r.get("cold_us")}
    for impl, pdl, label, color in lines:
        pts = [(r["T"], r["cold_us"]) for r in sel if r["impl"] == impl and r["pdl"] == pdl and r.get("cold_us")]
        if pts:
            ax.plot(*zip(*pts), "-", color=color, marker="o", markersize=3, label=label)
            sp = [(t, comp[t] / us) for t, us in pts if t in comp]
            if sp:
                ax2.plot(*zip(*sp), "-", color=color, marker="o", markersize=3, label=label)
    floor = sorted({(r["T"], r["floor_us"]) for r in sel})
    if floor:
        ax.plot(*zip(*floor), "--", color="black", label="floor (launch + bytes / copy BW)")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xlabel("T (tokens)")
        a.grid(True, alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("us per call (CUDA graph, cold, median)")
    ax.set_title("H = 2048, group 128, row scales, bf16")
    ax.legend(fontsize=8)
    ax2.axhline(1.0, color="black", linewidth=0.8)
    ax2.set_ylabel("speedup over torch.compile (cold)")
    ax2.set_title("speedup over torch.compile")
    timing.save_figure(fig, png_path, f"{OP} on {meta.get('device', '?')} ({str(meta.get('date', ''))[:10]})")


def main(argv=None) -> int:
    return timing.bench_main(__doc__, impls=IMPLS, run=run, plot=plot, full=SWEEP, quick=QUICK, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
