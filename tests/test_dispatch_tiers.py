"""Tier selection, reasons, forcing, explain, logging and pluggable tiers, on CPU.

A GPU is simulated: ``dispatch.environment.device_arch`` is replaced (the dispatcher's only
source of the arch) and the ``cute_kernels`` ops are replaced by recorders that compute the spec,
so the whole eager and compiled call path runs here. Problems on a "cuda" device are built
directly (they are NamedTuples) to reach the cuBLAS tier, which needs real CUDA tensors to run.
"""

import itertools
import logging
import sys

import pytest
import torch

import cute_kernels
import dispatch
from cute_kernels import reference as spec
from dispatch import environment, norm_router, router, silu_quant, tiers, topk, tuning

pytestmark = pytest.mark.filterwarnings("ignore:cute_kernels dispatch:RuntimeWarning")
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
INF = sys.maxsize
CUDA0 = torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    monkeypatch.delenv(tiers.FORCE_ENV, raising=False)
    monkeypatch.delenv(tiers.LOG_ENV, raising=False)
    monkeypatch.setattr(tiers, "_warned", set())
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()


@pytest.fixture
def calls(monkeypatch):
    """Stands in for the CuTe ops; each records ``(op, variant or None, M)`` and returns the spec."""
    log = []

    def router_gemm(x, weight, bias=None, *, out_dtype=FP32, out=None, pdl=True, variant=None):
        log.append(("router_gemm", variant, x.shape[0]))
        return spec.router_gemm(x, weight, bias, out_dtype)

    def norm_router_gemm(x, norm_weight, gate_weight, eps=1e-6, *, out_dtype=FP32, normed_out=None,
                         logits_out=None):
        log.append(("norm_router_gemm", None, x.shape[0]))
        return spec.rmsnorm_router_gemm(x, norm_weight, gate_weight, eps, out_dtype)

    def silu_mul_quant_fp8(x, group_size=128, *, scale_ub=None, ue8m0=False, scale_layout="row", out=None,
                           scales=None, pdl=True):
        log.append(("silu_mul_quant_fp8", None, x.shape[0]))
        return spec.silu_mul_quant_fp8(x, group_size, scale_ub, ue8m0, scale_layout)

    def pack_topk(ids, weights, *, out=None, pdl=True):
        log.append(("pack_topk", None, ids.shape[0]))
        return spec.pack_topk(ids, weights)

    for fn in (router_gemm, norm_router_gemm, silu_mul_quant_fp8, pack_topk):
        monkeypatch.setattr(cute_kernels, fn.__name__, fn, raising=False)
    return log


def simulate(monkeypatch, arch):
    """Every device (the CPU included) reports ``arch``."""
    monkeypatch.setattr(environment, "device_arch", lambda device: arch)
    dispatch.clear_cache()


def router_problem(xd, wd, h=64, e=8, bias=None, dense=True, device=CUDA0):
    return router.RouterProblem(device, xd, wd, bias, FP32, h, torch.Size([e, h]), dense)


def expected_router_tier(arch, xd, wd, h, m, dense):
    """The documented rules, restated: dtypes and layout per tier, then the default windows."""
    sixteen = (BF16, FP16)
    kernels_ok = arch in ("sm_90a", "sm_100a") and h % 8 == 0 and dense
    eligible = {
        "cute-mma": kernels_ok and xd == wd and xd in sixteen,
        "cute-dot": kernels_ok and wd in (BF16, FP32),
        "cublas": xd == wd and xd in sixteen,
    }
    if xd == wd == BF16:
        windows = {"cute-dot": (0, 8), "cute-mma": (9, INF)}
    elif xd == wd == FP16:
        windows = {"cute-mma": (0, INF)}
    else:
        windows = {"cute-dot": (0, 64)}
    for name in ("cute-mma", "cute-dot", "cublas"):
        lo, hi = windows.get(name, (0, INF))
        if eligible[name] and lo <= m <= hi:
            return name
    return "torch"


DTYPE_PAIRS = [(BF16, BF16), (FP16, FP16), (FP32, FP32), (BF16, FP32), (FP32, BF16), (FP16, BF16), (BF16, FP16)]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a", "sm_100a"])
@pytest.mark.parametrize("xd,wd", DTYPE_PAIRS)
def test_router_selection_matrix(monkeypatch, calls, arch, xd, wd):
    simulate(monkeypatch, arch)
    for h, dense, m, bias in itertools.product((64, 60), (True, False), (0, 1, 8, 9, 64, 65, 4096),
                                               (None, (FP32, torch.Size([8])))):
        p = router_problem(xd, wd, h, bias=bias, dense=dense)
        got = router.ROUTER.explain(p, m)
        assert got.tier == expected_router_tier(arch, xd, wd, h, m, dense), (arch, xd, wd, h, dense, m, str(got))
        steps = dict(got.steps)
        if arch == "sm_80" and xd == wd and xd in (BF16, FP16) and h % 8 == 0 and dense:
            assert "sm_80; the CuTe kernels need sm_90 or newer" in steps["cute-mma"]
        if h == 60 and xd == wd == BF16:
            assert steps["cute-mma"] == "skipped: H=60 is not a positive multiple of 8"
        if not dense and h == 64 and arch != "sm_80" and xd == wd == BF16:
            assert "16-byte aligned" in steps["cute-dot"]
        if xd != wd and arch != "sm_80":
            assert "needs x and weight both bfloat16 or both float16" in steps["cute-mma"]


# A table of the test's own: the shipped one changes whenever a measured sweep rewrites it.
TABLE = """{"source": "heuristic", "entries": [
    {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "bfloat16"], "shape": [7168, 256],
     "windows": {"cute-dot": [0, 8], "cute-mma": [9, null]}},
    {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "float32"], "shape": [3072, 256],
     "windows": {"cute-dot": [0, 64]}}]}"""


def test_router_windows_and_reasons_in_explain(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    monkeypatch.setattr(dispatch.tuning, "table", lambda: dispatch.tuning.parse(TABLE))
    p = router_problem(BF16, BF16, 7168, 256)  # a preset shape: the table's entry
    at_1, at_9, at_big = (router.ROUTER.explain(p, m) for m in (1, 9, 10**5))
    assert (at_1.tier, at_9.tier, at_big.tier) == ("cute-dot", "cute-mma", "cute-mma")
    assert dict(at_1.steps)["cute-mma"] == "skipped: the tuning table gives it M in [9, inf]"
    assert at_1.tuning_source == dispatch.tuning.table()[0]
    assert router.ROUTER.explain(router_problem(BF16, BF16, 64, 8), 1).tuning_source.startswith("built-in default")
    # fp32 weights: the dot kernel up to M = 64, torch's fp32 GEMM beyond (cuBLAS bf16 cannot take them)
    p32 = router_problem(BF16, FP32, 3072, 256)
    assert [router.ROUTER.explain(p32, m).tier for m in (1, 64, 65)] == ["cute-dot", "cute-dot", "torch"]
    text = str(router.ROUTER.explain(p32, 65))
    assert "* torch: runs" in text and "- cute-dot: skipped: the tuning table gives it M in [0, 64]" in text
    assert "- cublas: skipped: needs x and weight of one 16-bit dtype" in text


def test_router_kernel_row_limit(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    p = router_problem(FP16, FP16, 65536, 8)
    limit = (2**31 - 1) // 65536
    assert router.ROUTER.explain(p, limit).tier == "cute-mma"
    over = router.ROUTER.explain(p, limit + 1)
    assert over.tier == "cublas" and f"over its limit of {limit} rows" in dict(over.steps)["cute-mma"]
    assert "H=65544 is over 65536" in dict(router.ROUTER.explain(router_problem(FP16, FP16, 65544), 1).steps)[
        "cute-mma"]


def test_missing_kernel_is_reported_not_built(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    monkeypatch.delattr(cute_kernels, "router_gemm")
    got = router.ROUTER.explain(router_problem(BF16, BF16), 1)
    assert got.tier == "cublas"
    assert dict(got.steps)["cute-dot"] == "skipped: cute_kernels.router_gemm is not built in this version"


def norm_problem(gate_dtype=BF16, h=64, dense=True, device=CUDA0):
    return norm_router.NormRouterProblem(device, BF16, FP32, gate_dtype, FP32, h, torch.Size([8, h]), dense)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a", "sm_100a"])
@pytest.mark.parametrize("gate_dtype", [BF16, FP32, FP16])
@pytest.mark.parametrize("fused_built", [True, False])
def test_norm_router_selection(monkeypatch, calls, arch, gate_dtype, fused_built):
    simulate(monkeypatch, arch)
    if not fused_built:
        monkeypatch.delattr(cute_kernels, "norm_router_gemm")
    hopper = arch != "sm_80"
    for m in (1, 64, 65):
        got = norm_router.NORM_ROUTER.explain(norm_problem(gate_dtype), m)
        steps = dict(got.steps)
        if hopper and fused_built and gate_dtype != FP16:
            want = "cute-fused"
        elif hopper and gate_dtype != FP16:
            want = "unfused"  # the router GEMM of fp32 rows has its dot kernel
            assert steps["cute-fused"] == "skipped: cute_kernels.norm_router_gemm is not built in this version"
        else:
            want = "torch"
            assert "the router GEMM on fp32 rows would run on torch" in steps["unfused"]
        assert got.tier == want, str(got)


@pytest.mark.parametrize("arch", [None, "sm_80", "sm_90a", "sm_100a"])
def test_silu_and_pack_selection(monkeypatch, calls, arch):
    simulate(monkeypatch, arch)
    device = CUDA0 if arch else torch.device("cpu")
    hopper = arch in ("sm_90a", "sm_100a")
    silu = silu_quant.SiluQuantProblem(device, BF16, 4096, 128, False, "col", None, True)
    assert silu_quant.SILU_QUANT.explain(silu, 16).tier == ("cute" if hopper else "torch")
    assert silu_quant.SILU_QUANT.explain(silu._replace(dense=False), 16).tier == "torch"
    cpu_ub = silu._replace(scale_ub=(FP32, torch.device("cpu"), 1))
    if hopper:
        assert "scale_ub is on cpu" in dict(silu_quant.SILU_QUANT.explain(cpu_ub, 1).steps)["cute"]
        over = silu_quant.SILU_QUANT.explain(silu, (2**31 - 1) // 4096 + 1)
        assert over.tier == "torch" and "over its limit" in dict(over.steps)["cute"]
    pack = topk.PackTopkProblem(device, torch.int64, FP32, 8, True)
    assert topk.PACK_TOPK.explain(pack, 1).tier == ("cute" if hopper else "torch")
    assert topk.PACK_TOPK.explain(pack._replace(dense=False), 1).tier == "torch"
    if arch is None:
        assert dict(topk.PACK_TOPK.explain(pack, 1).steps)["cute"] == "skipped: tensors are on cpu, not a CUDA GPU"


def test_calls_run_the_chosen_tier_with_spec_results(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    w = torch.randn(8, 64, generator=gen).to(BF16)
    for m, variant in ((1, "dot"), (8, "dot"), (9, "mma"), (300, "mma")):
        x = torch.randn(m, 64, generator=gen).to(BF16)
        assert torch.equal(dispatch.router_gemm(x, w), spec.router_gemm(x, w))
        assert calls[-1] == ("router_gemm", variant, m)
    x = torch.randn(4, 64, generator=gen).to(BF16)
    dispatch.router_gemm(x[:, :56].contiguous(), w[:, :56].contiguous())
    assert calls[-1] == ("router_gemm", "dot", 4)
    n = len(calls)
    dispatch.router_gemm(x.t().contiguous().t(), w)  # a transposed view: not dense, torch runs
    assert len(calls) == n
    ids, wts = torch.randint(0, 64, (5, 8), generator=gen), torch.rand(5, 8, generator=gen)
    assert torch.equal(dispatch.pack_topk(ids, wts), spec.pack_topk(ids, wts))
    assert calls[-1] == ("pack_topk", None, 5)


def test_compiled_graph_chooses_the_tier_per_call(monkeypatch, calls, gen):
    """One graph traced with a symbolic M; the dot / mma choice still follows each call's M."""
    simulate(monkeypatch, "sm_90a")
    w = torch.randn(8, 64, generator=gen).to(BF16)

    def gate(x):
        return dispatch.router_gemm(x, w) * 2

    compiled = torch.compile(gate, fullgraph=True, dynamic=True, backend="aot_eager")
    for m in (4, 32, 2, 100):
        x = torch.randn(m, 64, generator=gen).to(BF16)
        assert torch.equal(compiled(x), spec.router_gemm(x, w) * 2)
        assert calls[-1] == ("router_gemm", "dot" if m <= 8 else "mma", m)


def test_explain_renders_every_tier(monkeypatch):
    x, w = torch.zeros(4, 64, dtype=BF16), torch.zeros(8, 64, dtype=BF16)
    got = dispatch.explain("router_gemm", x, w, out_dtype=BF16)
    assert got.tier == "torch" and got.m == 4
    text = str(got)
    assert text.splitlines()[0] == ("router_gemm: x bfloat16 [4, 64], weight bfloat16 [8, 64], no bias -> bfloat16 "
                                    "on cpu (no GPU arch)")
    assert "- cute-mma: skipped: tensors are on cpu, not a CUDA GPU" in text
    assert "- cublas: skipped: needs CUDA tensors; they are on cpu" in text
    assert "* torch: runs" in text
    with pytest.raises(ValueError, match="unknown op 'router'; dispatched ops: router_gemm"):
        dispatch.explain("router", x, w)
    with pytest.raises(TypeError, match="weight must have dtype"):
        dispatch.explain("router_gemm", x, w.to(torch.int32))


def test_force_by_environment(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    monkeypatch.setenv(tiers.FORCE_ENV, "router_gemm=torch, pack_topk=cute")
    dispatch.clear_cache()
    x, w = torch.randn(2, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    torch.testing.assert_close(dispatch.router_gemm(x, w), spec.router_gemm(x, w))  # torch's fp32 GEMM
    assert calls == [] and dispatch.explain("router_gemm", x, w).forced == tiers.FORCE_ENV
    assert "(forced by CUTE_KERNELS_FORCE_TIER)" in str(dispatch.explain("router_gemm", x, w))
    dispatch.pack_topk(torch.zeros(3, 2, dtype=torch.int32), torch.zeros(3, 2))
    assert calls == [("pack_topk", None, 3)]
    for bad, message in (("router_gemm", "expected comma-separated op=tier pairs"),
                         ("router_gemm=fast", "router_gemm has no tier 'fast'; its tiers: cute-mma, cute-dot"),
                         ("gemm=torch", "unknown op 'gemm'")):
        monkeypatch.setenv(tiers.FORCE_ENV, bad)
        dispatch.clear_cache()
        with pytest.raises(ValueError, match=message):
            dispatch.router_gemm(x, w)


def test_force_tier_context_manager(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    x, w = torch.randn(100, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    monkeypatch.setenv(tiers.FORCE_ENV, "router_gemm=torch")  # the context manager wins
    with dispatch.force_tier("router_gemm", "cute-dot"):
        dispatch.router_gemm(x, w)
        with dispatch.force_tier("router_gemm", "cute-mma"):
            dispatch.router_gemm(x[:2], w)
        dispatch.router_gemm(x[:3], w)
    dispatch.router_gemm(x, w)
    assert calls == [("router_gemm", "dot", 100), ("router_gemm", "mma", 2), ("router_gemm", "dot", 3)]
    with pytest.raises(ValueError, match="router_gemm has no tier 'cute'"):
        with dispatch.force_tier("router_gemm", "cute"):
            pass


def test_forcing_an_ineligible_tier_says_why(gen):
    x, w = torch.randn(4, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    message = r"router_gemm: tier 'cute-mma' \(forced by dispatch.force_tier\) is not eligible: tensors are on cpu"
    with dispatch.force_tier("router_gemm", "cute-mma"):
        with pytest.raises(ValueError, match=message):
            dispatch.router_gemm(x, w)
        with pytest.raises(ValueError, match=message):
            dispatch.explain("router_gemm", x, w)
    with dispatch.force_tier("router_gemm", "cublas"):
        with pytest.raises(ValueError, match="'cublas'.*not eligible: needs CUDA tensors"):
            dispatch.router_gemm(x, w)


def test_forced_tier_over_its_row_limit(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    with dispatch.force_tier("pack_topk", "cute"):
        with pytest.raises(ValueError, match="'cute'.*cannot take M="):
            topk.PACK_TOPK.explain(topk.PackTopkProblem(CUDA0, torch.int32, FP32, 8, True), 2**31)


def test_register_and_remove_a_tier(gen):
    ran = []

    def mine(x, weight, bias, out_dtype, out):
        ran.append(x.shape[0])
        return spec.router_gemm(x, weight, bias, out_dtype)

    dispatch.register_tier("router_gemm", "mine", lambda p: None if p.hidden == 64 else "only H=64", mine,
                           before="torch")
    try:
        assert router.ROUTER.names() == ["cute-mma", "cute-dot", "cublas", "mine", "torch"]
        x, w = torch.randn(3, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
        assert torch.equal(dispatch.router_gemm(x, w), spec.router_gemm(x, w)) and ran == [3]
        assert dispatch.explain("router_gemm", x, w).tier == "mine"
        other = torch.randn(3, 32).to(BF16)
        dispatch.router_gemm(other, torch.randn(8, 32).to(BF16))
        assert ran == [3]
        assert dict(dispatch.explain("router_gemm", other, torch.randn(8, 32).to(BF16)).steps)["mine"] == \
            "skipped: only H=64"
        with pytest.raises(ValueError, match="already has a tier 'mine'"):
            dispatch.register_tier("router_gemm", "mine", lambda p: None, mine)
        with pytest.raises(ValueError, match="at most one of before= and after="):
            dispatch.register_tier("router_gemm", "x", lambda p: None, mine, before="torch", after="cublas")
        dispatch.register_tier("pack_topk", "first", lambda p: None, lambda i, w, o: "first")
        dispatch.register_tier("pack_topk", "second", lambda p: None, lambda i, w, o: "second", after="cute")
        assert topk.PACK_TOPK.names() == ["first", "cute", "second", "torch"]
        assert dispatch.pack_topk(torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, 1)) == "first"
    finally:
        dispatch.remove_tier("router_gemm", "mine")
        for name in ("first", "second"):
            if name in topk.PACK_TOPK.names():
                dispatch.remove_tier("pack_topk", name)
    assert router.ROUTER.names() == ["cute-mma", "cute-dot", "cublas", "torch"]
    assert topk.PACK_TOPK.names() == ["cute", "torch"]


def test_log_once_per_problem(monkeypatch, caplog, gen):
    monkeypatch.setenv(tiers.LOG_ENV, "1")
    caplog.set_level(logging.INFO, logger="cute_kernels.dispatch")
    w = torch.randn(8, 64, generator=gen).to(BF16)
    for m in (1, 2, 50):
        dispatch.router_gemm(torch.randn(m, 64, generator=gen).to(BF16), w)
    dispatch.router_gemm(torch.randn(2, 32, generator=gen).to(BF16), torch.randn(8, 32).to(BF16))
    records = [r.getMessage() for r in caplog.records if r.name == "cute_kernels.dispatch"]
    assert len(records) == 2, records
    assert records[0].startswith("router_gemm x bfloat16 [M, 64], weight bfloat16 [8, 64], no bias -> float32 on cpu")
    assert "M in [0, inf]: torch" in records[0] and "cute-mma skipped: tensors are on cpu" in records[0]


class FakeKernelUnavailable(RuntimeError):
    pass


def test_a_missing_compiled_kernel_degrades_to_the_next_tier(monkeypatch, calls, gen):
    """Without the DSL, a kernel absent from the ahead-of-time directory: warn once, fall back."""
    simulate(monkeypatch, "sm_90a")
    monkeypatch.setattr(environment, "MISSING_KERNEL_ERRORS", (FakeKernelUnavailable,))
    tried = []

    def no_dot_kernel(x, weight, bias=None, *, out_dtype=FP32, out=None, pdl=True, variant=None):
        tried.append(variant)
        if variant == "dot":
            raise FakeKernelUnavailable("RouterGemm[dot] is in no AOT directory")
        return spec.router_gemm(x, weight, bias, out_dtype)

    monkeypatch.setattr(cute_kernels, "router_gemm", no_dot_kernel)
    w = torch.randn(8, 64, generator=gen).to(BF16)
    x = torch.randn(2, 64, generator=gen).to(BF16)
    with pytest.warns(RuntimeWarning, match="no compiled kernel and no CuTe DSL to build one") as record:
        first = dispatch.router_gemm(x, w)
        dispatch.router_gemm(x, w)
    assert len([r for r in record if "no compiled kernel" in str(r.message)]) == 1
    torch.testing.assert_close(first, spec.router_gemm(x, w))
    assert tried == ["dot"]  # then torch (cuBLAS needs CUDA tensors); the dot kernel is not retried
    assert "skipped: no compiled kernel" in dict(dispatch.explain("router_gemm", x, w).steps)["cute-dot"]
    dispatch.router_gemm(torch.randn(20, 64, generator=gen).to(BF16), w)
    assert tried == ["dot", "mma"]


def test_kernels_without_the_dsl_need_an_ahead_of_time_directory(monkeypatch):
    import cute_kernels.compile

    monkeypatch.setattr(environment, "_import_cute_kernels",
                        lambda: (cute_kernels, "ImportError: no cutlass", None))
    monkeypatch.setattr(cute_kernels.compile, "aot_dir", lambda: None, raising=False)
    module, why = environment.cute_kernels_module()
    assert module is None and why == ("the CuTe DSL is not importable (ImportError: no cutlass) and no "
                                      "ahead-of-time kernel directory is set ($CUTE_KERNELS_AOT_DIR)")
    monkeypatch.setattr(cute_kernels.compile, "aot_dir", lambda: "/opt/kernels")
    assert environment.cute_kernels_module() == (cute_kernels, None)


def test_warmup_runs_every_tier_a_preset_can_pick(monkeypatch, calls):
    from dispatch import preload

    simulate(monkeypatch, "sm_90a")
    monkeypatch.setattr(preload, "_cuda_device", lambda device: torch.device("cpu"))  # a simulated GPU
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    summary = dispatch.warmup(["deepseek-v3", "deepseek-v4-flash"])
    windows, _ = tuning.windows("router_gemm", "sm_90a", ("bfloat16", "bfloat16"), (7168, 256))
    first_m = sorted((max(w[0], 1), tier) for tier, w in windows.items() if w is not None)  # first M >= 1
    assert [c for c in summary.calls if c[0] == "deepseek-v3"] == [
        # cuBLAS needs a real GPU: on the simulated one its window falls through to torch.
        ("deepseek-v3", "router_gemm", m, "torch" if tier == "cublas" else tier) for m, tier in first_m] + [
        ("deepseek-v3", "silu_mul_quant_fp8", 1, "cute")] + [("deepseek-v3", "pack_topk", 1, "cute")] * 4
    assert ("deepseek-v4-flash", "norm_router_gemm", 1, "cute-fused") in summary.calls
    assert ("router_gemm", "dot", 1) in calls and ("router_gemm", "mma", windows["cute-mma"][0]) in calls
    assert ("norm_router_gemm", None, 1) in calls
    assert "deepseek-v4-flash    norm_router_gemm     M=1      cute-fused" in str(summary)
    assert dispatch.warmup(["gpt-oss-20b"], m_values=[3]).calls[0] == ("gpt-oss-20b", "router_gemm", 3, "cute-dot")


def test_degenerate_router_sizes_run_on_torch(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    for h, e in ((0, 8), (64, 0)):
        x, w = torch.randn(3, h, generator=gen).to(BF16), torch.randn(e, h, generator=gen).to(BF16)
        assert dispatch.explain("router_gemm", x, w).tier == "torch"
        assert torch.equal(dispatch.router_gemm(x, w), torch.zeros(3, e))
    assert calls == []
