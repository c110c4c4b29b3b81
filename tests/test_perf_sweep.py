"""perf/sweep.py without a GPU: the command line, the plan, the rows it writes (JSON and CSV,
errors recorded and the sweep going on), reading results back (the earlier benchmarks' files
too), the targets and the plots. ``sweep.measure`` is replaced by a stand-in that returns times."""

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

from dispatch import environment
from perf import results, sweep, targets
from perf.benches import BENCHES, host_overhead

META = {"device": "Test GPU", "arch": "sm_90a", "date": "2031-02-03T04:05:06+00:00", "copy_gbps": 3000.0,
        "graph_launch_floor_us": 1.0}


def test_help_and_argument_errors_without_gpu():
    out = subprocess.run([sys.executable, str(results.ROOT / "perf" / "sweep.py"), "--help"], capture_output=True,
                         text=True, cwd="/")  # a script: it finds the repository from its own path
    assert out.returncode == 0 and "--write-tuning" in out.stdout and "--modes" in out.stdout
    for argv, message in ((["--op", "pack_topk"], "give --out"), ([], "give --op"),
                          (["--op", "pack_topk", "--dry-run", "--impls", "nope"], "unknown --impls nope"),
                          (["--op", "pack_topk", "--dry-run", "--modes", "b2b,fast"], "unknown --modes fast")):
        with pytest.raises(SystemExit):
            sweep.parse_args(argv)
    args = sweep.parse_args(["--op", "router_gemm", "--preset", "deepseek-v3,kimi-k2", "--m", "1,16", "--out", "x",
                             "--modes", "chain"])
    assert (args.preset, args.m, str(args.out), args.modes) == (["deepseek-v3", "kimi-k2"], [1, 16], "x", ["chain"])


def test_timing_needs_a_gpu(capsys):
    assert sweep.main(["--op", "pack_topk", "--out", "unused"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_entry_points_without_gpu():
    for argv, rc, message in ((["pack_topk", "--out", "unused"], 2, "no CUDA device"),
                              (["host_overhead", "--out", "unused"], 2, "no CUDA device"),
                              (["nope"], 2, "usage: python -m perf.benches")):
        out = subprocess.run([sys.executable, "-m", "perf.benches", *argv], capture_output=True, text=True,
                             cwd=results.ROOT)
        assert (out.returncode, message in out.stderr) == (rc, True), out.stderr


def test_host_overhead_benchmark_without_gpu(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        host_overhead.parse_args([])  # --out is required
    assert host_overhead.main(["--out", "unused"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    # The router sweep records the same figures (no second copy of the calls).
    monkeypatch.setattr(host_overhead, "router_overhead", lambda: {"dispatch.router_gemm": 9.0})
    router = BENCHES["router_gemm"]
    pts = router.points(["minimax-m2"], sizes=[1])
    assert router.extra_meta(pts, 20) == {"eager_overhead_us": {"dispatch.router_gemm": 9.0}}


def test_dry_run_plans_each_op(monkeypatch, capsys):
    monkeypatch.setattr(environment, "device_arch", lambda device: "sm_90a")
    assert sweep.main(["--op", "all", "--quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # router: deepseek-v3 and gpt-oss-120b x 5 implementations, minimax-m2 (fp32 weights) x 4, at 3 M, each in
    # two modes (b2b, or alone for those without PDL; and chain)
    assert "[84/84] router_gemm gpt-oss-120b M=128 dispatch chain" in out
    assert "[3/84] router_gemm deepseek-v3 M=1 cute-mma b2b" in out and "router_gemm deepseek-v3 M=1 cublas alone" in out
    assert "not timed: cublas on minimax-m2 (needs x and weight of one 16-bit dtype" in out
    assert "[12/12] silu_mul_quant_fp8" in out and "[27/27] pack_topk" in out
    assert "pack_topk int32/float32 k=8 T=1 cute alone" in out
    assert "norm_router_gemm deepseek-v4-flash M=1 unfused chain" in out


def test_points_implementations_and_modes():
    router, silu, pack = BENCHES["router_gemm"], BENCHES["silu_mul_quant_fp8"], BENCHES["pack_topk"]
    assert len(router.points()) == 16 * 9
    assert router.points(shapes=["4096x64"], sizes=[2]) == [
        {"preset": "4096x64", "H": 4096, "E": 64, "x_dtype": "bfloat16", "w_dtype": "bfloat16",
         "out_dtype": "float32", "bias": False, "M": 2}]
    assert [p["H"] for p in silu.points(["gpt-oss-120b"], sizes=[16])] == [2880]
    assert silu.points(["gpt-oss-120b"], sizes=[16])[0]["group_size"] == 64
    assert {p["k"] for p in pack.points(["qwen3-next"])} == {10}
    assert sweep.impls_for(router) == list(router.impls)
    assert [i.name for i in sweep.impls_for(router, ["cute-dot", "torch"])] == ["cute-dot", "torch"]
    assert sweep.modes_for(router) == ("b2b", "chain")
    assert sweep.modes_for(router, pdl_off=True) == ("b2b", "chain", "alone")
    assert sweep.modes_for(pack, pdl_off=True) == ("b2b", "alone")  # it has its PDL-off rows already
    assert sweep.modes_for(pack, ["chain"]) == ("chain",)


def test_sweep_writes_rows_records_errors_and_goes_on(monkeypatch, tmp_path, capsys):
    op = dataclasses.replace(BENCHES["pack_topk"], extra_meta=lambda pts, replays: {"eager_overhead_us": {"torch": 4.0}})
    times = {("cute", "b2b"): 1.0, ("cute", "alone"): 1.5, ("torch", "alone"): 6.0}

    def measure(bench, point, impl, mode, replays):
        if impl.name == "cute" and mode == "alone" and point["T"] == 64:
            raise RuntimeError("kernel fell over")
        return {"cold_us": times[impl.name, mode] * point["T"] ** 0.1, "hot_us": 0.9, "l2_multiple": 3.0}

    monkeypatch.setattr(sweep, "measure", measure)
    pts = op.points(sizes=[1, 64])
    assert sweep.sweep_op(op, pts, op.impls, op.modes, META, 20, tmp_path) is False  # a failed row fails the run

    out = capsys.readouterr().out
    assert "[1/18] int32/float32 k=8 T=1 cute b2b: cold 1.0 hot 0.9" in out
    assert "T=64 cute alone: FAILED RuntimeError: kernel fell over" in out
    assert "[18/18]" in out and "target k=8, T=1/4/16/64/256/1024 b2b <= 1.5 us" in out
    data = json.loads((tmp_path / op.file).read_text())
    assert data["meta"]["complete"] and data["meta"]["eager_overhead_us"] == {"torch": 4.0}
    assert data["meta"]["device"] == "Test GPU" and "cute" in data["meta"]["impls"]
    assert data["meta"]["modes"] == ["b2b", "alone"] and "out=weights" in data["meta"]["chain_producer"]
    rows = data["rows"]
    assert len(rows) == 18
    failed = [r for r in rows if "error" in r]
    assert len(failed) == 3 and all(r["cold_us"] is None and "fell over" in r["error"] for r in failed)
    first = rows[0]
    assert (first["impl"], first["mode"], first["pdl"]) == ("cute", "b2b", True)
    assert [(r["impl"], r["mode"], r["pdl"]) for r in rows[1:3]] == [("cute", "alone", False), ("torch", "alone", False)]
    assert first["bytes"] == 8 * (4 + 4 + 4) and first["floor_us"] == round(1.0 + 96 / 3e6, 3)
    assert first["gbps"] == round(96 / 1.0 / 1e3, 1) and first["pct_of_floor"] == round(100 * first["floor_us"], 1)
    assert (first["speedup"], first["baseline"]) == (6.0, "torch")
    with (tmp_path / "pack_topk.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 18 and {"impl", "mode", "cold_us", "gbps", "pct_of_floor", "speedup", "error"} <= set(table[0])


def test_a_failing_peer_does_not_fail_the_run(monkeypatch, tmp_path):
    op = BENCHES["silu_mul_quant_fp8"]

    def measure(bench, point, impl, mode, replays):
        if impl.name == "torch_compile":
            raise RuntimeError("no compiler here")
        return {"cold_us": 2.0, "hot_us": 1.0, "l2_multiple": 3.0}

    monkeypatch.setattr(sweep, "measure", measure)
    assert sweep.sweep_op(op, op.points(sizes=[16]), op.impls, op.modes, META, 20, tmp_path) is True


def test_reads_the_committed_results():
    res = results.load(results.RESULTS / "router_gemm.json")
    assert res.bench.op == "router_gemm"
    assert {r["impl"] for r in res.rows} == {"cute-dot", "cute-mma", "cublas", "torch", "dispatch"}
    dsv3 = {(r["impl"], r["mode"]): r for r in res.rows if r["preset"] == "deepseek-v3" and r["M"] == 1}
    # rows from before modes: PDL on was b2b, PDL off alone
    assert set(dsv3) == {("cute-dot", "b2b"), ("cute-dot", "alone"), ("cute-mma", "b2b"), ("cute-mma", "alone"),
                         ("cublas", "alone"), ("torch", "alone"), ("dispatch", "b2b")}
    assert all(r["cold_us"] > 0 and r["floor_us"] > 0 for r in dsv3.values())
    res = results.load(results.RESULTS / "pack_topk.json")
    assert {r["impl"] for r in res.rows} == {"cute", "torch"}  # "cute_kernels" then: the tier's name now
    lines = targets.evaluate(res.bench.op, res.rows, lambda r: results.point_key(res.bench, r))
    assert [t["met"] for t in lines] == [True, True]


def test_plots_and_tables_from_committed_results(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from perf import plots

    measured = [name for name in BENCHES if (results.RESULTS / f"{name}.json").exists()]
    assert {"router_gemm", "norm_router_gemm", "silu_mul_quant_fp8", "pack_topk"} <= set(measured)
    for name in measured:
        res = plots.load(name)
        for draw in (plots.time_vs_size, plots.pct_of_floor, plots.speedup):
            assert draw(res) is not None
        assert "| target | mode |" in str(getattr(plots.targets_table(res), "data", plots.targets_table(res)))
    tiers = plots.tier_table(plots.load("router_gemm"))
    assert "| deepseek-v3 | 1 | b2b | cute-dot |" in str(getattr(tiers, "data", tiers))
    assert plots.load("norm_router_gemm", tmp_path) is None
    assert "does not exist" in capsys.readouterr().out
    assert plots.time_vs_size(None) is None
    (tmp_path / "pack_topk.json").write_text((results.RESULTS / "pack_topk.json").read_text())
    assert plots.save_png(tmp_path / "pack_topk.json").stat().st_size > 10_000
    matplotlib.pyplot.close("all")
