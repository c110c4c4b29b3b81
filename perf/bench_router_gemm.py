"""Router GEMM benchmark: both cute_kernels variants (PDL on and off) against torch, per preset x M.

    python perf/bench_router_gemm.py --out perf/results/h100            # full sweep (GPU)
    python perf/bench_router_gemm.py --out /tmp/x --quick               # smoke run (GPU)
    python perf/bench_router_gemm.py --plot-only perf/results/h100/router_gemm.json   # no GPU

torch is the path a serving engine takes without a custom kernel: ``torch.mm(x, W.T,
out_dtype=float32)`` (cuBLAS) for 16-bit weights, ``F.linear`` in fp32 (TF32 off) for fp32
weights. Rows carry ``default: true`` for the variant ``cute_kernels.router_gemm`` picks by
itself at that M; the table and plot show that one. Also measured: the PDL chain (a producer
kernel writing x, then the router) for DeepSeek-V3 at M = 1 and 16.
Writes <out>/router_gemm.json (+ .csv) and <out>/router_gemm.png; prints a table last.
"""

import json
import pathlib
import statistics
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import presets, timing  # noqa: E402

OP = "router_gemm"
M_VALUES = [1, 2, 4, 8, 16, 32, 64, 128]
FULL = [(p, m) for p in presets.PRESETS for m in M_VALUES]
QUICK = [("deepseek-v3", m) for m in (1, 16, 128)] + [("minimax-m2", 1), ("gpt-oss-120b", 1)]
# "cute": the variant router_gemm picks by itself; "cute-dot" / "cute-mma": forced.
IMPLS = [("cute", True), ("cute", False), ("torch", False), ("cute-dot", True), ("cute-mma", True)]
DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def shape(preset: str):
    p = presets.get(preset)
    return p.hidden_size, p.num_experts, DT[p.gate_dtype], DT[p.logits_dtype], p.gate_bias


def bytes_per_call(preset: str, m: int) -> int:
    h, e, w_dtype, out_dtype, bias = shape(preset)
    w = w_dtype.itemsize
    return e * h * w + m * h * 2 + m * e * out_dtype.itemsize + (e * w if bias else 0)


def torch_router(x, w, b, out_dtype):
    if x.dtype == w.dtype and x.dtype != torch.float32:
        y = torch.mm(x, w.T, out_dtype=torch.float32)
        if b is not None:
            y += b
        return y.to(out_dtype)
    return torch.nn.functional.linear(x.float(), w.float(), None if b is None else b.float()).to(out_dtype)


def make_inputs(preset: str, m: int):
    h, e, w_dtype, out_dtype, bias = shape(preset)

    def make():
        x = torch.randn(m, h, device="cuda").to(torch.bfloat16)
        w = (torch.randn(e, h, device="cuda") / h ** 0.5).to(w_dtype)
        b = (torch.randn(e, device="cuda") * 0.1).to(w_dtype) if bias else None
        return x, w, b, torch.empty(m, e, dtype=out_dtype, device="cuda")
    return make


def measure(impl: str, pdl: bool, preset: str, m: int, replays: int) -> dict:
    import cute_kernels
    from cute_kernels import reference

    out_dtype = shape(preset)[3]
    if impl == "torch":
        def call(x, w, b, out):
            out.copy_(torch_router(x, w, b, out_dtype))
    else:
        variant = impl.split("-")[1] if "-" in impl else None

        def call(x, w, b, out):
            cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=out, pdl=pdl, variant=variant)

    def poison(inputs):
        inputs[3].fill_(float("nan"))

    def check(inputs):
        x, w, b, out = inputs
        exact = reference.router_gemm(x, w, b, out_dtype=torch.float32).double()
        err = (torch.linalg.norm(out.double() - exact) / torch.linalg.norm(exact)).item()
        limit = 1e-5 if out_dtype == torch.float32 else 1e-2  # bf16 out: rounding, not a wrong sum
        if not err <= limit:
            raise AssertionError(f"{OP} {preset} M={m} {impl} pdl={pdl}: relative error {err:.3g}")

    torch.backends.cuda.matmul.allow_tf32 = False
    return timing.time_per_call(make_inputs(preset, m), call, bytes_per_call=bytes_per_call(preset, m),
                                replays=replays, poison=poison, check=check)


def pdl_chain(m: int, producer: str, replays: int, pairs: int = 64) -> float:
    """us per router call in a graph of [producer writes x -> router(x)] pairs, minus the
    graph of producers alone (benchmarking.md). ``producer``: "torch" (an elementwise copy
    into x) or "early-release" (cute_kernels.pack_topk writing x's bytes: a PDL kernel that
    releases its dependents before it works)."""
    import cute_kernels

    make = make_inputs("deepseek-v3", m)
    sets = [make() for _ in range(pairs)]
    n = m * 7168 // 2  # int32 words in x
    k = 8 if n % 8 == 0 else 1
    srcs = [(torch.randint(0, 256, (n // k, k), dtype=torch.int32, device="cuda"),
             torch.rand(n // k, k, device="cuda"), torch.randn(m, 7168, device="cuda").to(torch.bfloat16))
            for _ in range(pairs)]

    def produce(x, src):
        if producer == "torch":
            x.copy_(src[2])
        else:
            cute_kernels.pack_topk(src[0], src[1], out=x.view(torch.int32).view(n // k, k))

    def graph(with_router: bool):
        for (x, w, b, out), src in zip(sets[:2], srcs[:2]):  # warm up outside the capture
            produce(x, src)
            cute_kernels.router_gemm(x, w, out=out)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for (x, w, b, out), src in zip(sets, srcs):
                produce(x, src)
                if with_router:
                    cute_kernels.router_gemm(x, w, out=out)
        return statistics.median(timing._replay_ms(g, replays))

    return (graph(True) - graph(False)) / pairs * 1e3


def run(out_dir: pathlib.Path, points, impls, replays: int) -> bool:
    from cute_kernels.ops import router_gemm_variant

    meta = timing.device_meta()
    meta.update({"op": OP, "replays": replays, "x_dtype": "bfloat16",
                 "torch": "torch.mm(out_dtype=float32) for 16-bit weights, F.linear in fp32 (no TF32) otherwise"})
    print(f"{meta['device']}: copy {meta['copy_gbps']} GB/s, graph launch floor {meta['graph_launch_floor_us']} us",
          flush=True)
    rows, ok = [], True
    for preset, m in points:
        h, e, w_dtype, out_dtype, bias = shape(preset)
        names = ("bfloat16", str(w_dtype).replace("torch.", ""))
        for impl, pdl in impls:
            if impl == "torch":
                variant = None
            elif impl == "cute":
                variant = router_gemm_variant(*names, m)
            else:
                variant = impl.split("-")[1]
                if variant == "mma" and router_gemm_variant(names[0], names[1], 1 << 30) != "mma":
                    continue
            row = {"op": OP, "preset": preset, "H": h, "E": e, "x_dtype": names[0], "w_dtype": names[1],
                   "out_dtype": str(out_dtype).replace("torch.", ""), "bias": bias, "M": m,
                   "impl": "cute_kernels" if variant else "torch", "variant": variant, "pdl": pdl,
                   "default": impl == "cute",
                   "cold_us": None, "hot_us": None, "floor_us": round(timing.floor_us(bytes_per_call(preset, m), meta), 3)}
            try:
                r = measure(impl, pdl, preset, m, replays)
                row.update(cold_us=round(r["cold_us"], 3), hot_us=round(r["hot_us"], 3),
                           l2_multiple=round(r["l2_multiple"], 3))
            except Exception as exc:  # keep the rest of the sweep; the row says what failed
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                ok = False
            rows.append(row)
            print(f"  {preset:>18} M={m:>3} {impl:>8} pdl={pdl!s:5} cold {row['cold_us']} hot {row['hot_us']} "
                  f"floor {row['floor_us']}", flush=True)
    if "deepseek-v3" in {p for p, _ in points}:
        meta["pdl_chain_us"] = {}
        for m in (1, 16):
            for producer in ("torch", "early-release"):
                try:
                    meta["pdl_chain_us"][f"M={m} {producer}"] = round(pdl_chain(m, producer, replays), 3)
                except Exception:
                    traceback.print_exc()
                    ok = False
        print(f"PDL chain, DeepSeek-V3 router per call (us): {meta['pdl_chain_us']}")
    json_path = out_dir / f"{OP}.json"
    timing.write_results(json_path, meta, rows)
    try:
        plot(json_path, out_dir / f"{OP}.png")
    except Exception:
        traceback.print_exc()
    print_table(rows)
    print(f"wrote {json_path}")
    return ok


def _pick(rows, preset, m, pdl):
    """The row of the variant the op picks by itself at this M."""
    return next((r for r in rows if r["preset"] == preset and r["M"] == m and r["default"] and r["pdl"] == pdl), {})


def print_table(rows) -> None:
    def fmt(v):
        return f"{v:7.2f}" if isinstance(v, (int, float)) else f"{'-':>7}"

    print(f"\n{'preset':>18} {'M':>4} {'var':>4} {'pdl':>7} {'no-pdl':>7} {'hot':>7} {'torch':>7} {'floor':>7} "
          f"{'speedup':>7}")
    for preset in dict.fromkeys(r["preset"] for r in rows):
        for m in sorted({r["M"] for r in rows if r["preset"] == preset}):
            on, off = _pick(rows, preset, m, True), _pick(rows, preset, m, False)
            ref = next((r for r in rows if r["preset"] == preset and r["M"] == m and r["impl"] == "torch"), {})
            speedup = ref["cold_us"] / on["cold_us"] if ref.get("cold_us") and on.get("cold_us") else None
            print(f"{preset:>18} {m:>4} {on.get('variant') or '-':>4} {fmt(on.get('cold_us'))} "
                  f"{fmt(off.get('cold_us'))} {fmt(on.get('hot_us'))} {fmt(ref.get('cold_us'))} "
                  f"{fmt(on.get('floor_us'))} {fmt(speedup)}")
    print("(cold us per call in a CUDA graph; the variant the op picks; speedup = torch / cute PDL on)")


def plot(results_json, png_path) -> None:
    """Cold time vs M per preset: both variants, PDL on/off, torch and the floor (no GPU needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(pathlib.Path(results_json).read_text())
    meta, rows = data["meta"], data["rows"]
    names = list(dict.fromkeys(r["preset"] for r in rows))
    cols = 4
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    # (select, label, color, style): the op's own pick with PDL on/off, forced variants, torch
    lines = [(lambda r: r["default"] and r["pdl"], "cute_kernels PDL on", "C0", "-"),
             (lambda r: r["default"] and not r["pdl"], "cute_kernels PDL off", "C0", ":"),
             (lambda r: not r["default"] and r["variant"] == "dot", "forced dot", "C1", "--"),
             (lambda r: not r["default"] and r["variant"] == "mma", "forced mma", "C3", "--"),
             (lambda r: r["impl"] == "torch", "torch", "C2", "-")]
    for ax, preset in zip(axes.flat, names):
        sel = sorted((r for r in rows if r["preset"] == preset), key=lambda r: r["M"])
        for select, label, color, style in lines:
            pts = [(r["M"], r["cold_us"]) for r in sel if select(r) and r.get("cold_us") is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=color, marker="o", markersize=3, label=label)
        floor = sorted({(r["M"], r["floor_us"]) for r in sel})
        ax.plot(*zip(*floor), "--", color="black", label="floor")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{preset} ({sel[0]['H']}x{sel[0]['E']} {sel[0]['w_dtype']})", fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("us per call (cold, CUDA graph)")
    axes[0][0].legend(fontsize=7)
    timing.save_figure(fig, png_path, f"{OP} on {meta.get('device', '?')} ({str(meta.get('date', ''))[:10]})")


def main(argv=None) -> int:
    return timing.bench_main(__doc__, impls=IMPLS, run=run, plot=plot, full=FULL, quick=QUICK, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
