"""perf/ as a library, without a GPU: the typed bench definitions (a bench that lacks a field or
contradicts itself fails when it is defined), the timing modes (which implementation runs in
which mode, how the rows and speedups read, the chain's producer, and ``time_per_call`` building
and subtracting the chain's graphs, on CPU tensors with CUDA's graph calls stood in for), and the
package's import graph, which has no circle."""

import ast
import contextlib
import dataclasses
import pathlib

import pytest
import torch

from cute_kernels import timing
from dispatch import environment, tiers
from perf import results, sweep
from perf.bench import ALONE, B2B, CHAIN, Bench, Impl
from perf.benches import BENCHES

PERF = pathlib.Path(results.__file__).resolve().parent
META = {"graph_launch_floor_us": 1.0, "copy_gbps": 3000.0}


def fields(**changes) -> dict:
    """A complete bench's fields (pack_topk's), with ``changes``."""
    bench = BENCHES["pack_topk"]
    return {**{f.name: getattr(bench, f.name) for f in dataclasses.fields(Bench)}, **changes}


# -- the typed definitions -------------------------------------------------------------------------
def test_a_bench_missing_a_field_fails_when_defined():
    for missing in ("op", "case", "main_input", "modes", "bytes_per_call"):
        kwargs = fields()
        del kwargs[missing]
        with pytest.raises(TypeError, match=missing):
            Bench(**kwargs)
    with pytest.raises(TypeError):  # keywords only: no field can be taken for another
        Bench(*fields().values())


@pytest.mark.parametrize("changes, message", [
    ({"size": "M"}, "size 'M' is not a point field"),
    ({"main_input": "x"}, "main input 'x' is not one of the inputs"),
    ({"baselines": ("torch_compile",)}, "baselines"),
    ({"modes": ("b2b", "fast")}, "modes"),
    ({"case": None}, "case is not callable"),
    ({"impls": (Impl("cute", "a"), Impl("cute", "b"))}, "names repeat"),
])
def test_a_bench_that_contradicts_itself_fails_when_defined(changes, message):
    with pytest.raises(ValueError, match=message):
        Bench(**fields(**changes))


def test_benches_are_frozen_and_each_has_a_valid_main_input():
    bench = BENCHES["router_gemm"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench.op = "other"
    assert {b.op: (b.main_input, b.main_index) for b in BENCHES.values()} == {
        "router_gemm": ("x", 0), "router_topk": ("x", 0), "norm_router_gemm": ("x", 0),
        "silu_mul_quant_fp8": ("x", 0), "pack_topk": ("weights", 1)}
    with pytest.raises(ValueError, match="pdl_off needs pdl"):
        Impl("torch", "no PDL to switch off", pdl_off=True)


def test_bench_implementations_are_named_as_the_dispatcher_tiers():
    for bench in BENCHES.values():
        names = bench.impl_names()
        assert set(tiers.op_tiers(bench.op).names()) <= set(names), bench.op  # every tier is timed by its name
        others = set(names) - set(tiers.op_tiers(bench.op).names())
        # the dispatcher, peers, and (for the routing step) the router GEMM it is held against
        assert others <= {"dispatch", "flashinfer", "torch_compile", "router_gemm"}, (bench.op, others)


# -- modes: plan and rows --------------------------------------------------------------------------
def test_each_implementation_runs_in_the_modes_it_has():
    pdl = Impl("cute", "", pdl=True, pdl_off=True)
    always = Impl("dispatch", "", pdl=True)
    never = Impl("torch", "")
    assert pdl.modes((B2B, CHAIN)) == (B2B, CHAIN) and pdl.modes((B2B, ALONE, CHAIN)) == (B2B, ALONE, CHAIN)
    assert always.modes((B2B, ALONE, CHAIN)) == (B2B, CHAIN)  # its PDL does not switch off
    assert never.modes((B2B, ALONE, CHAIN)) == (ALONE, CHAIN)  # b2b and alone are one timing without PDL
    assert never.modes((CHAIN,)) == (CHAIN,)
    assert [pdl.launches_with_pdl(m) for m in (B2B, ALONE, CHAIN)] == [True, False, True]
    assert [never.launches_with_pdl(m) for m in (B2B, ALONE, CHAIN)] == [False, False, False]


def test_the_plan_puts_an_implementations_modes_together(monkeypatch):
    monkeypatch.setattr(environment, "device_arch", lambda device: "sm_90a")
    bench = BENCHES["router_gemm"]
    items, skipped = sweep.plan(bench, bench.points(["deepseek-v3"], sizes=[1]), bench.impls, sweep.modes_for(bench))
    assert [(i.name, m) for _, i, m in items] == [
        ("cute-dot", B2B), ("cute-dot", CHAIN), ("cute-mma", B2B), ("cute-mma", CHAIN), ("cublas", ALONE),
        ("cublas", CHAIN), ("torch", ALONE), ("torch", CHAIN), ("dispatch", B2B), ("dispatch", CHAIN)]
    assert [impl for impl, _ in skipped] == ["flashinfer"]
    rows = [sweep.new_row(bench, p, i, m, META) for p, i, m in items]
    assert [(r["impl"], r["mode"], r["pdl"]) for r in rows[:2]] == [("cute-dot", B2B, True), ("cute-dot", CHAIN, True)]
    assert (rows[5]["impl"], rows[5]["mode"], rows[5]["pdl"]) == ("cublas", CHAIN, False)
    assert [results.label(r) for r in rows[:3]] == ["cute-dot b2b", "cute-dot chain", "cute-mma b2b"]


def test_rows_from_before_modes_read_as_b2b_and_alone():
    pack = BENCHES["pack_topk"]
    old = {"op": "pack_topk", "T": 1, "k": 8, "ids_dtype": "int32", "weights_dtype": "float32"}
    assert results.normalise(pack, {**old, "impl": "cute_kernels", "pdl": True})["mode"] == B2B
    assert results.normalise(pack, {**old, "impl": "cute_kernels", "pdl": False}) == {
        **old, "impl": "cute", "pdl": False, "mode": ALONE}
    assert results.normalise(pack, {**old, "impl": "torch", "pdl": False, "mode": CHAIN})["mode"] == CHAIN


def test_speedups_compare_chain_with_chain():
    pack = BENCHES["pack_topk"]
    point = {"op": "pack_topk", "T": 1, "k": 8, "ids_dtype": "int32", "weights_dtype": "float32", "floor_us": 1.0}
    rows = [{**point, "impl": i, "mode": m, "pdl": i == "cute" and m != ALONE, "cold_us": us}
            for i, m, us in (("cute", B2B, 1.0), ("cute", ALONE, 2.0), ("cute", CHAIN, 4.0), ("torch", ALONE, 6.0),
                             ("torch", CHAIN, 12.0))]
    assert [(r["mode"], r["speedup"]) for r in results.derive(pack, rows)] == [
        (B2B, 6.0), (ALONE, 3.0), (CHAIN, 3.0), (ALONE, 1.0), (CHAIN, 1.0)]


# -- the chain's producer and its graphs -----------------------------------------------------------
def test_measure_hands_the_chain_its_producer(monkeypatch):
    seen = []
    monkeypatch.setattr(timing, "time_per_call", lambda make, call, **kw: seen.append(kw) or {"cold_us": 1.0})
    pack = BENCHES["pack_topk"]
    point = pack.points(sizes=[4])[0]
    torch_impl = pack.impl("torch")
    sweep.measure(pack, point, torch_impl, ALONE, 20)
    sweep.measure(pack, point, torch_impl, CHAIN, 20)
    assert seen[0]["producer"] is None and seen[1]["bytes_per_call"] == pack.bytes_per_call(point)
    ids, weights = torch.randint(0, 256, (4, 8)), torch.rand(4, 8)
    want = weights.clone()
    write = seen[1]["producer"]((ids, weights))  # it writes the bench's main input: the weights
    weights.zero_()
    write()
    assert torch.equal(weights, want) and torch.equal(ids, ids)


class FakeEvent:
    """A CUDA event stand-in that reads the fake clock ``fake_cuda`` advances."""
    clock = 0.0

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        self.t = FakeEvent.clock

    def elapsed_time(self, end):
        return end.t - self.t


def fake_cuda(monkeypatch, cost):
    """CUDA's graph, stream and event calls for CPU tensors: a captured graph is its list of
    launches, and replaying it runs them, each advancing the clock by ``cost(launch)`` ms."""
    class Graph(list):
        def replay(self):
            for launch in self:
                launch()
                FakeEvent.clock += cost(launch)

    stream = type("Stream", (), {"wait_stream": lambda self, other: None})
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (1 << 30, 1 << 30))
    monkeypatch.setattr(torch.cuda, "Stream", stream)
    monkeypatch.setattr(torch.cuda, "current_stream", stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(timing, "_capture", Graph)


def test_time_per_call_subtracts_the_producers_graph_in_a_chain(monkeypatch):
    """Each op call costs 0.003 ms and each producer 0.002 ms: the chain gives 3 us per call,
    the producers' own figure 2 us; the op's outputs are poisoned before and checked after."""
    def double(x, out):
        torch.mul(x, 2, out=out)

    def cost(launch):
        return 0.003 if getattr(launch, "func", None) is double else 0.002

    fake_cuda(monkeypatch, cost)
    checked = []

    def check(inputs):
        x, out = inputs
        assert torch.equal(out, 2 * x), "the op did not run after its producer"
        checked.append(1)

    def poison(inputs):
        inputs[1].fill_(float("nan"))

    make = lambda: (torch.randn(16), torch.empty(16))  # noqa: E731
    r = timing.time_per_call(make, double, bytes_per_call=1000, l2_bytes=10_000, min_calls=4, replays=3,
                             poison=poison, check=check, producer=timing.mul_producer(0))
    assert r["rotations"] == 30 and len(checked) == 31  # every set after the cold graph, set 0 after the hot one
    assert r["cold_us"] == pytest.approx(3.0) and r["hot_us"] == pytest.approx(3.0)
    assert r["producer_us"] == pytest.approx(2.0)
    plain = timing.time_per_call(make, double, bytes_per_call=1000, l2_bytes=10_000, min_calls=4, replays=3)
    assert plain["cold_us"] == pytest.approx(3.0) and "producer_us" not in plain


def test_the_chain_producer_rewrites_the_main_input_unchanged():
    for x in (torch.randn(3, 5).to(torch.bfloat16), torch.randint(0, 256, (4, 8)), torch.rand(2, 8)):
        want = x.clone()
        write = timing.mul_producer(1)((torch.empty(1), x))
        x.fill_(7)
        write()
        assert torch.equal(x, want) and x.dtype == want.dtype
    assert timing.per_call_us([4.0, 6.0, 5.0], 10, base_ms=[2.0, 2.0, 3.0]) == pytest.approx(300.0)


# -- the import graph ------------------------------------------------------------------------------
def perf_imports(root=PERF) -> dict:
    """``{module: {perf modules it imports}}`` for every module of the package at ``root``, from
    its source (imports inside functions too: a circle through one is a circle all the same).
    ``from pkg import name`` counts as importing ``pkg.name`` where that is a module, else ``pkg``."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module
                if node.level:  # relative to the module's package
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([node.module] if node.module else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def import_circle(graph: dict) -> list | None:
    """One circle in ``graph`` as the modules along it, or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for dep in sorted(graph[module]):
            if circle := visit(dep):
                return circle
        path.pop()
        done.add(module)
        return None

    return next((c for c in map(visit, sorted(graph)) if c), None)


def test_perf_has_no_import_circle():
    graph = perf_imports()
    assert graph["perf.sweep"] >= {"perf.results", "perf.benches", "perf.targets"}
    assert graph["perf.results"] >= {"perf.bench", "perf.benches"} and "perf.sweep" not in graph["perf.plots"]
    assert graph["perf.probes.dot_split_probe"] == {"perf.probes.probe_kit"}
    assert import_circle(graph) is None, " -> ".join(import_circle(graph))


def test_the_circle_check_sees_one(tmp_path):
    """The old layout: the sweep importing each bench, and a bench the sweep to run it."""
    pkg = tmp_path / "perf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sweep.py").write_text("from . import bench_a\n")
    (pkg / "bench_a.py").write_text("def main():\n    from perf.sweep import main\n")
    graph = perf_imports(pkg)
    assert graph == {"perf": set(), "perf.sweep": {"perf.bench_a"}, "perf.bench_a": {"perf.sweep"}}
    assert import_circle(graph) == ["perf.bench_a", "perf.sweep", "perf.bench_a"]
