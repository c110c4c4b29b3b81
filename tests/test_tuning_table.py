"""The dispatcher's tuning table: the shipped one, and the writer that derives one from a sweep
(``dispatch.tuning.write_tuning`` through ``perf/sweep.py --write-tuning``), on a small hand-made
sweep result.

The hand-made result (``SWEEP``): DeepSeek-V3's shape with cute-dot fastest at M = 1..4,
cute-mma at 8..32 and cublas from 64, so the windows are cute-dot [0, 5], cute-mma [6, 45],
cublas [46, inf] (boundaries halfway in log space: isqrt(4 * 8) = 5, isqrt(32 * 64) = 45) and
torch, the last tier, is left to catch the rest; and MiniMax-M2's fp32 weights, where only
cute-dot and torch run and torch takes over from M = 64. Rows the writer must ignore are mixed
in: PDL off, the dispatcher's own, a failed point, chain rows (the table is for back-to-back
calls as the dispatcher launches them).
"""

import json
import pathlib
import subprocess
import sys

import pytest
import torch

import dispatch
from cute_kernels import presets
from dispatch import environment, tiers, tuning
from dispatch.ops import router_gemm as router
from perf import results, sweep
from perf.benches import BENCHES

INF = tuning.NO_LIMIT
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DSV3_US = {  # tier -> cold us at each M of MS
    "cute-dot": [3.0, 3.1, 3.3, 6.0, 7.0, 9.0, 14.0, 20.0, 30.0],
    "cute-mma": [4.0, 4.0, 4.1, 4.5, 4.7, 5.5, 10.0, 15.0, 25.0],
    "cublas": [8.0, 8.0, 8.0, 8.1, 8.2, 8.3, 8.5, 9.0, 10.0],
    "torch": [20.0] * 9,
}
MINIMAX_US = {"cute-dot": [4.0, 4.1, 4.5, 5.0, 6.0, 8.0, 22.0, 30.0, 40.0], "torch": [8.0, 15.0, 15.0, 19.0, 20.0,
                                                                                     18.0, 19.0, 21.0, 25.0]}


def row(preset, h, e, w_dtype, m, impl, pdl, cold, **extra):
    return {"op": "router_gemm", "preset": preset, "H": h, "E": e, "x_dtype": "bfloat16", "w_dtype": w_dtype,
            "out_dtype": "float32", "bias": False, "M": m, "impl": impl, "pdl": pdl, "cold_us": cold,
            "hot_us": cold, "floor_us": 2.0, **extra}


def sweep_rows():
    rows = []
    for preset, h, e, w_dtype, times in (("deepseek-v3", 7168, 256, "bfloat16", DSV3_US),
                                         ("minimax-m2", 3072, 256, "float32", MINIMAX_US)):
        for tier, us in times.items():
            rows += [row(preset, h, e, w_dtype, m, tier, tier.startswith("cute"), t) for m, t in zip(MS, us)]
    rows += [row("deepseek-v3", 7168, 256, "bfloat16", m, "cute-dot", False, 0.5) for m in MS]  # PDL off
    rows += [row("deepseek-v3", 7168, 256, "bfloat16", m, "dispatch", True, 0.5, tier="cute-dot") for m in MS]
    rows.append(row("deepseek-v3", 7168, 256, "bfloat16", 64, "cute-mma", True, None, error="RuntimeError: boom"))
    rows += [row("deepseek-v3", 7168, 256, "bfloat16", m, tier, tier.startswith("cute"), 0.1, mode="chain")
             for m in MS for tier in ("torch", "cublas")]  # fastest everywhere, but in a chain
    return rows


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "router_gemm.json"
    meta = {"op": "router_gemm", "arch": "sm_90a", "device": "Test GPU", "date": "2031-02-03T04:05:06+00:00",
            "copy_gbps": 3000.0, "graph_launch_floor_us": 1.0}
    path.write_text(json.dumps({"meta": meta, "rows": sweep_rows()}))
    return path


@pytest.fixture
def table_copy(tmp_path):
    path = tmp_path / "tuning.json"
    path.write_text(tuning.TABLE_PATH.read_text())
    return path


def use_table(monkeypatch, path):
    """The dispatcher decides from ``path`` on a simulated sm_90a GPU."""
    monkeypatch.setattr(environment, "device_arch", lambda device: "sm_90a")
    monkeypatch.setattr(tuning, "table", lambda: tuning.parse(pathlib.Path(path).read_text()))
    dispatch.clear_cache()


def router_tier(h, e, w_dtype, m):
    p = router.RouterProblem(torch.device("cuda", 0), torch.bfloat16, w_dtype, None, torch.float32, h,
                             torch.Size([e, h]), True)
    return router.OP.explain(p, m).tier


# -- the shipped table ---------------------------------------------------------------------------
def test_shipped_table_parses_and_covers_every_preset():
    source, entries = tuning.table()
    assert source
    for p in presets.PRESETS.values():
        dtypes = ("bfloat16", p.gate_dtype)
        assert ("router_gemm", "sm_90a", dtypes, (p.hidden_size, p.num_experts)) in entries, p.name
        if p.norm_router:
            assert ("norm_router_gemm", "sm_90a", dtypes, (p.hidden_size, p.num_experts)) in entries, p.name
        assert ("silu_mul_quant_fp8", "sm_90a", ("bfloat16",), (p.moe_intermediate_size,)) in entries, p.name
        assert ("pack_topk", "sm_90a", ("int64", "float32"), (p.top_k,)) in entries, p.name
    for (op, *_), windows in entries.items():
        assert set(windows) <= set(tiers.op_tiers(op).names()), (op, windows)


def test_shipped_windows_do_not_overlap():
    for key, windows in tuning.table()[1].items():
        spans = sorted(w for w in windows.values() if w != tuning.NEVER)
        for (_, hi), (lo, _) in zip(spans, spans[1:]):
            assert hi < lo, (key, windows)


# -- format: a null window ------------------------------------------------------------------------
def test_a_null_window_means_never(monkeypatch, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"source": "s", "entries": [
        {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "bfloat16"], "shape": [64, 8],
         "windows": {"cute-mma": None, "cute-dot": [0, 3], "cublas": [4, None]}}]}))
    assert tuning.parse(path.read_text())[1][("router_gemm", "sm_90a", ("bfloat16", "bfloat16"), (64, 8))] == {
        "cute-mma": tuning.NEVER, "cute-dot": (0, 3), "cublas": (4, INF)}
    use_table(monkeypatch, path)
    try:
        assert [router_tier(64, 8, torch.bfloat16, m) for m in (0, 3, 4, 10**6)] == ["cute-dot"] * 2 + ["cublas"] * 2
        p = router.RouterProblem(torch.device("cuda", 0), torch.bfloat16, torch.bfloat16, None, torch.float32, 64,
                                 torch.Size([8, 64]), True)
        assert dict(router.OP.explain(p, 1).steps)["cute-mma"] == (
            "skipped: the tuning table never runs it for this problem")
    finally:
        dispatch.clear_cache()


# -- the writer -----------------------------------------------------------------------------------
def test_writer_reproduces_the_hand_made_sweep(monkeypatch, sweep_file, table_copy):
    before = json.loads(table_copy.read_text())["entries"]
    written = sweep.write_tuning([sweep_file], table_copy)
    assert len(written) == 2
    data = json.loads(table_copy.read_text())
    assert "Test GPU" in data["source"] and "2031-02-03" in data["source"] and str(sweep_file) in data["source"]
    entries = {(e["op"], e["arch"], tuple(e["dtypes"]), tuple(e["shape"])): e["windows"] for e in data["entries"]}
    assert entries[("router_gemm", "sm_90a", ("bfloat16", "bfloat16"), (7168, 256))] == {
        "cute-mma": [6, 45], "cute-dot": [0, 5], "cublas": [46, None]}
    assert entries[("router_gemm", "sm_90a", ("bfloat16", "float32"), (3072, 256))] == {
        "cute-mma": None, "cute-dot": [0, 45], "cublas": None, "torch": [46, None]}
    # every other entry is kept, in its place
    assert [e["shape"] for e in data["entries"]] == [e["shape"] for e in before]
    kept = [e for e in data["entries"] if e["shape"] not in ([7168, 256], [3072, 256])]
    assert kept == [e for e in before if e["shape"] not in ([7168, 256], [3072, 256])]

    use_table(monkeypatch, table_copy)
    try:
        tiers_at = {m: router_tier(7168, 256, torch.bfloat16, m) for m in (0, 1, 4, 5, 6, 8, 32, 45, 46, 64, 10**5)}
        assert tiers_at == {0: "cute-dot", 1: "cute-dot", 4: "cute-dot", 5: "cute-dot", 6: "cute-mma", 8: "cute-mma",
                            32: "cute-mma", 45: "cute-mma", 46: "cublas", 64: "cublas", 10**5: "cublas"}
        assert [router_tier(3072, 256, torch.float32, m) for m in (1, 45, 46, 256)] == ["cute-dot"] * 2 + ["torch"] * 2
    finally:
        dispatch.clear_cache()


def test_writer_adds_new_shapes_and_rewrites_its_own(sweep_file, table_copy):
    data = json.loads(sweep_file.read_text())
    dsv3 = [r for r in data["rows"] if r["preset"] == "deepseek-v3"]
    data["rows"] = [{**r, "preset": "4096x64", "H": 4096, "E": 64} for r in dsv3]
    sweep_file.write_text(json.dumps(data))
    sweep.write_tuning([sweep_file], table_copy)
    once = table_copy.read_text()
    sweep.write_tuning([sweep_file], table_copy)
    assert table_copy.read_text() == once  # a second run changes nothing
    last = json.loads(once)["entries"][-1]
    assert (last["shape"], last["windows"]) == ([4096, 64], {"cute-mma": [6, 45], "cute-dot": [0, 5],
                                                             "cublas": [46, None]})


def test_writer_refuses_results_without_arch(sweep_file, table_copy):
    data = json.loads(sweep_file.read_text())
    del data["meta"]["arch"]
    sweep_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no 'arch'"):
        sweep.write_tuning([sweep_file], table_copy)
    assert table_copy.read_text() == tuning.TABLE_PATH.read_text()


def test_best_windows_gives_each_tier_one_window():
    # cute-dot is fastest at M = 1, 2 and, by 1%, at 8; one window each: the 1% is given up
    times = {1: {"dot": 3.0, "mma": 4.0}, 2: {"dot": 3.0, "mma": 4.0}, 4: {"dot": 5.0, "mma": 4.0},
             8: {"dot": 4.95, "mma": 5.0}, 16: {"dot": 8.0, "mma": 5.0}}
    assert tuning.best_windows(times) == {"dot": (0, 2), "mma": (3, None)}
    # a single measured M, and a tier missing where it did not run
    assert tuning.best_windows({16: {"dot": 1.0}}) == {"dot": (0, None)}
    assert tuning.best_windows({1: {"dot": 1.0}, 2: {"mma": 1.0}, 3: {"dot": 2.0, "mma": 1.0}}) == {
        "dot": (0, 1), "mma": (2, None)}


def test_the_sweep_reads_tier_times_for_the_writer(sweep_file):
    m = results.measured(sweep_file)
    assert (m.op, m.arch, m.timed) == ("router_gemm", "sm_90a", {"cute-dot", "cute-mma", "cublas", "torch"})
    dsv3 = m.times[("bfloat16", "bfloat16"), (7168, 256)]
    assert dsv3[1] == {"cute-dot": [3.0], "cute-mma": [4.0], "cublas": [8.0], "torch": [20.0]}
    assert dsv3[64]["cute-mma"] == [10.0]  # its failed row there adds nothing


def test_make_tuning_rewrites_the_shipped_table_unchanged(tmp_path):
    """The committed table is what the committed sweeps give (``make tuning``'s command)."""
    table = tmp_path / "tuning.json"
    table.write_text(tuning.TABLE_PATH.read_text())
    sweeps = [results.RESULTS / BENCHES[op].file for op in ("router_gemm", "norm_router_gemm")]
    out = subprocess.run([sys.executable, str(results.ROOT / "perf" / "sweep.py"), "--write-tuning",
                          *map(str, sweeps), "--table", str(table)], capture_output=True, text=True,
                         cwd=results.ROOT)
    assert out.returncode == 0, out.stderr
    assert table.read_text() == tuning.TABLE_PATH.read_text()
