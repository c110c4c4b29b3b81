"""perf/sweep.py without a GPU: the command line, the plan, the rows it writes (JSON and CSV,
errors recorded and the sweep going on), reading results back (the earlier benchmarks' files
too), the targets and the plots. ``measure`` is replaced by a stand-in that returns times."""

import csv
import json
import pathlib
import subprocess
import sys

import pytest

from dispatch import environment

PERF = pathlib.Path(__file__).resolve().parent.parent / "perf"
sys.path.insert(0, str(PERF))
import sweep  # noqa: E402

META = {"device": "Test GPU", "arch": "sm_90a", "date": "2031-02-03T04:05:06+00:00", "copy_gbps": 3000.0,
        "graph_launch_floor_us": 1.0}


def test_help_and_argument_errors_without_gpu():
    out = subprocess.run([sys.executable, str(PERF / "sweep.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--write-tuning" in out.stdout
    for argv, message in ((["--op", "pack_topk"], "give --out"), ([], "give --op"),
                          (["--op", "pack_topk", "--dry-run", "--impls", "nope"], "unknown --impls nope")):
        with pytest.raises(SystemExit):
            sweep.parse_args(argv)
    args = sweep.parse_args(["--op", "router_gemm", "--preset", "deepseek-v3,kimi-k2", "--m", "1,16", "--out", "x"])
    assert (args.preset, args.m, args.out) == (["deepseek-v3", "kimi-k2"], [1, 16], pathlib.Path("x"))


def test_timing_needs_a_gpu(capsys):
    assert sweep.main(["--op", "pack_topk", "--out", "unused"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_host_overhead_benchmark_without_gpu(monkeypatch, capsys):
    import bench_host_overhead

    with pytest.raises(SystemExit):
        bench_host_overhead.parse_args([])  # --out is required
    assert bench_host_overhead.main(["--out", "unused"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    # The router sweep records the same figures (no second copy of the calls).
    monkeypatch.setattr(bench_host_overhead, "router_overhead", lambda: {"dispatch.router_gemm": 9.0})
    pts = sweep.OPS["router_gemm"].points(["minimax-m2"], sizes=[1])
    assert sweep.OPS["router_gemm"].extra_meta(pts, 20) == {"eager_overhead_us": {"dispatch.router_gemm": 9.0}}


def test_dry_run_plans_each_op(monkeypatch, capsys):
    monkeypatch.setattr(environment, "device_arch", lambda device: "sm_90a")
    assert sweep.main(["--op", "all", "--quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # router: deepseek-v3 and gpt-oss-120b x 5 implementations, minimax-m2 (fp32 weights) x 4, at 3 M
    assert "[42/42] router_gemm gpt-oss-120b M=128 dispatch" in out
    assert "not timed: cublas on minimax-m2 (needs x and weight of one 16-bit dtype" in out
    assert "[12/12] silu_mul_quant_fp8" in out and "[27/27] pack_topk" in out
    assert "norm_router_gemm deepseek-v4-flash M=1 unfused" in out


def test_points_and_implementations():
    router, silu, pack = sweep.OPS["router_gemm"], sweep.OPS["silu_mul_quant_fp8"], sweep.OPS["pack_topk"]
    assert len(router.points()) == 16 * 9
    assert router.points(shapes=["4096x64"], sizes=[2]) == [
        {"preset": "4096x64", "H": 4096, "E": 64, "x_dtype": "bfloat16", "w_dtype": "bfloat16",
         "out_dtype": "float32", "bias": False, "M": 2}]
    assert [p["H"] for p in silu.points(["gpt-oss-120b"], sizes=[16])] == [2880]
    assert silu.points(["gpt-oss-120b"], sizes=[16])[0]["group_size"] == 64
    assert {p["k"] for p in pack.points(["qwen3-next"])} == {10}
    assert sweep.impls_for(router) == router.IMPLS
    assert sweep.impls_for(router, ["cute-dot", "torch"], pdl_off=True) == [
        ("cute-dot", True), ("torch", False), ("cute-dot", False)]
    assert sweep.impls_for(pack, pdl_off=True) == pack.IMPLS  # it has its PDL-off rows already


def test_sweep_writes_rows_records_errors_and_goes_on(monkeypatch, tmp_path, capsys):
    op = sweep.OPS["pack_topk"]
    times = {("cute_kernels", True): 1.0, ("cute_kernels", False): 1.5, ("torch", False): 6.0}

    def measure(impl, pdl, point, replays):
        if impl == "cute_kernels" and not pdl and point["T"] == 64:
            raise RuntimeError("kernel fell over")
        return {"cold_us": times[impl, pdl] * point["T"] ** 0.1, "hot_us": 0.9, "l2_multiple": 3.0}

    monkeypatch.setattr(op, "measure", measure)
    monkeypatch.setattr(op, "extra_meta", lambda pts, replays: {"eager_overhead_us": {"torch": 40.0}})
    pts = op.points(sizes=[1, 64])
    assert sweep.sweep_op(op, pts, op.IMPLS, META, 20, tmp_path) is False  # a failed row fails the run

    out = capsys.readouterr().out
    assert "[1/18] int32/float32 k=8 T=1 cute_kernels: cold 1.0 hot 0.9" in out
    assert "T=64 cute_kernels PDL off: FAILED RuntimeError: kernel fell over" in out
    assert "[18/18]" in out and "target k=8, T=1/4/16/64/256/1024 <= 1.5 us" in out
    data = json.loads((tmp_path / "pack_topk.json").read_text())
    assert data["meta"]["complete"] and data["meta"]["eager_overhead_us"] == {"torch": 40.0}
    assert data["meta"]["device"] == "Test GPU" and "cute_kernels" in data["meta"]["impls"]
    rows = data["rows"]
    assert len(rows) == 18
    failed = [r for r in rows if "error" in r]
    assert len(failed) == 3 and all(r["cold_us"] is None and "fell over" in r["error"] for r in failed)
    first = rows[0]
    assert first["bytes"] == 8 * (4 + 4 + 4) and first["floor_us"] == round(1.0 + 96 / 3e6, 3)
    assert first["gbps"] == round(96 / 1.0 / 1e3, 1) and first["pct_of_floor"] == round(100 * first["floor_us"], 1)
    assert (first["speedup"], first["baseline"]) == (6.0, "torch")
    with (tmp_path / "pack_topk.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 18 and {"impl", "cold_us", "gbps", "pct_of_floor", "speedup", "error"} <= set(table[0])


def test_reads_the_committed_results():
    op, meta, rows = sweep.load_results(sweep.RESULTS / "router_gemm.json")
    assert op.OP == "router_gemm" and {r["impl"] for r in rows} == {"cute-dot", "cute-mma", "cublas", "torch", "dispatch"}
    dsv3 = {(r["impl"], r["pdl"]): r for r in rows if r["preset"] == "deepseek-v3" and r["M"] == 1}
    assert {("cute-dot", True), ("cute-dot", False), ("cublas", False), ("dispatch", True)} <= set(dsv3)
    assert all(r["cold_us"] > 0 and r["floor_us"] > 0 for r in dsv3.values())
    op, meta, rows = sweep.load_results(sweep.RESULTS / "pack_topk.json")
    lines = sweep.targets.evaluate(op.OP, rows, lambda r: sweep.point_key(op, r))
    assert [t["met"] for t in lines] == [True, True]


def test_plots_and_tables_from_committed_results(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import plots

    for name in ("router_gemm", "norm_router_gemm", "silu_mul_quant_fp8", "pack_topk"):
        res = plots.load(name)
        for draw in (plots.time_vs_size, plots.pct_of_floor, plots.speedup):
            assert draw(res) is not None
        assert "| target |" in str(getattr(plots.targets_table(res), "data", plots.targets_table(res)))
    assert plots.load("norm_router_gemm", tmp_path) is None
    assert "does not exist" in capsys.readouterr().out
    assert plots.time_vs_size(None) is None
    (tmp_path / "pack_topk.json").write_text((sweep.RESULTS / "pack_topk.json").read_text())
    assert plots.save_png(tmp_path / "pack_topk.json").stat().st_size > 10_000
    matplotlib.pyplot.close("all")
