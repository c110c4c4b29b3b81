"""Tier selection, reasons, forcing, explain, logging and pluggable tiers, on CPU.

A GPU is simulated: ``dispatch.environment.device_arch`` is replaced (the dispatcher's only
source of the arch), and so are the compiled functions (recorders that compute the spec into
the outputs they are given), the SM count and the current device, so the whole eager and
compiled call path runs here, the CuTe tiers' launchers included. Problems on a "cuda" device
are built directly (they are NamedTuples) to reach the cuBLAS tier, which needs real CUDA
tensors to run.
"""

import dataclasses
import itertools
import logging
import sys

import pytest
import torch

import cute_kernels
import dispatch
from cute_kernels import bridge, ops
from cute_kernels import reference as spec
from cute_kernels.compile import default_cache
from cute_kernels.kernels.common import H100_SMS
from cute_kernels.kernels.router_gemm import NormRouterGemm, NormRouterTopk, Route, RouterGemm, RouterTopk
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels.kernels.silu_mul_quant_fp8 import SiluMulQuantFp8
from dispatch import environment, tiers, tuning
from dispatch.ops import norm_router_gemm as norm_router
from dispatch.ops import pack_topk as topk
from dispatch.ops import router_gemm as router
from dispatch.ops import silu_mul_quant_fp8 as silu_quant

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


REAL_COMPILED = bridge.compiled  # the real lookup, which the ``calls`` fixture replaces


def spec_kernel(kernel, args):
    """What the compiled ``kernel`` computes for ``args`` (its launch arguments), written into the
    outputs there; returns ``(op, variant or None, M)``."""
    if isinstance(kernel, (RouterTopk, NormRouterTopk, Route)):
        return spec_selection(kernel, args)
    if isinstance(kernel, NormRouterGemm):
        x, gate_weight, norm_weight, logits, normed, eps = args
        want_normed, want_logits = spec.norm_router_gemm(x, norm_weight.view(-1), gate_weight, eps, logits.dtype)
        normed.copy_(want_normed), logits.copy_(want_logits)
        return "norm_router_gemm", None, x.shape[0]
    if isinstance(kernel, RouterGemm):
        x, weight, bias, out, _workspace = args
        out.copy_(spec.router_gemm(x, weight, bias if kernel.bias_dtype else None, out.dtype))
        return "router_gemm", kernel.variant, x.shape[0]
    if isinstance(kernel, SiluMulQuantFp8):
        x, out, scales, ub = args
        q, s = spec.silu_mul_quant_fp8(x, kernel.group_size, ub if kernel.has_scale_ub else None, kernel.ue8m0,
                                       kernel.scale_layout)
        out.copy_(q), scales.copy_(s)
        return "silu_mul_quant_fp8", None, x.shape[0]
    ids, weights, out = args
    out.copy_(spec.pack_topk(ids, weights))
    return "pack_topk", None, ids.shape[0]


def spec_selection(kernel, args):
    """The routing kernels: the spec's logits into the logits' room, then its routing."""
    routing = kernel.routing
    if isinstance(kernel, Route):
        logits, cbias, weights, ids, scaling = args
        op, m = "route", logits.shape[0]
    else:
        if isinstance(kernel, NormRouterTopk):
            x, gate, norm_weight, normed, eps, room, _counters, cbias, weights, ids, scaling = args
            want_normed, want_logits = spec.norm_router_gemm(x, norm_weight.view(-1), gate, eps)
            normed.copy_(want_normed)
            op = "norm_router_topk"
        else:
            x, w, bias, room, _counters, cbias, weights, ids, scaling = args
            want_logits = spec.router_gemm(x, w, bias if kernel.bias_dtype else None)
            op = "router_topk"
        m = x.shape[0]
        logits = room[:m * kernel.experts].view(m, kernel.experts)
        logits.copy_(want_logits)
    w_, i_ = spec.route(logits, dataclasses.replace(routing, scaling=scaling),
                        cbias if routing.correction_bias else None)
    if kernel.packed:
        ids.copy_(spec.pack_topk(i_, w_))
    else:
        weights.copy_(w_), ids.copy_(i_)
    return op, None, m


class Launches(list):
    """``(op, variant or None, M)`` per kernel launched; ``raw`` holds each ``(kernel, arguments)``."""

    def __init__(self):
        super().__init__()
        self.raw = []


@pytest.fixture
def calls(monkeypatch):
    """The CuTe kernels launched. Compiled functions are recorders that compute the spec; the
    launchers reach them through their real per-call path (CPU tensors: no current device)."""
    log = Launches()

    def compiled(kernel, device):
        def fn(*args):
            log.raw.append((kernel, args))
            log.append(spec_kernel(kernel, args))
        return fn

    monkeypatch.setattr(bridge, "compiled", compiled)
    monkeypatch.setattr(bridge, "current_device", lambda: None)
    monkeypatch.setattr(bridge, "workspace", lambda device, ints: torch.zeros(ints, dtype=torch.int32))
    monkeypatch.setattr(bridge, "num_sms", lambda index: H100_SMS)
    default_cache().clear_memory()  # no launcher keeps a function across tests
    yield log
    default_cache().clear_memory()


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
        "cute-mma": kernels_ok and (xd, wd) in MMA_PAIRS,
        "cute-dot": kernels_ok,
        "cublas": xd == wd and xd in sixteen,
    }
    if xd == BF16 and wd in (BF16, FP32):
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


MMA_PAIRS = [(BF16, BF16), (FP16, FP16), (BF16, FP32)]
DTYPE_PAIRS = [(BF16, BF16), (FP16, FP16), (FP32, FP32), (BF16, FP32), (FP32, BF16), (FP16, BF16), (BF16, FP16)]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a", "sm_100a"])
@pytest.mark.parametrize("xd,wd", DTYPE_PAIRS)
def test_router_selection_matrix(monkeypatch, calls, arch, xd, wd):
    simulate(monkeypatch, arch)
    for h, dense, m, bias in itertools.product((64, 60), (True, False), (0, 1, 8, 9, 64, 65, 4096),
                                               (None, (FP32, torch.Size([8])))):
        p = router_problem(xd, wd, h, bias=bias, dense=dense)
        got = router.OP.explain(p, m)
        assert got.tier == expected_router_tier(arch, xd, wd, h, m, dense), (arch, xd, wd, h, dense, m, str(got))
        steps = dict(got.steps)
        if arch == "sm_80" and xd == wd and xd in (BF16, FP16) and h % 8 == 0 and dense:
            assert "sm_80; the CuTe kernels need sm_90 or newer" in steps["cute-mma"]
        if h == 60 and xd == wd == BF16:
            assert steps["cute-mma"] == "skipped: x's hidden size H=60 must be a positive multiple of 8"
        if not dense and h == 64 and arch != "sm_80" and xd == wd == BF16:
            assert "16-byte aligned" in steps["cute-dot"]
        if (xd, wd) not in MMA_PAIRS and arch != "sm_80":
            assert "variant='mma' (tensor cores) needs x and weight both bfloat16 or both float16, or bfloat16 x" in steps["cute-mma"]


# A table of the test's own: the shipped one changes whenever a measured sweep rewrites it.
TABLE = """{"source": "heuristic", "entries": [
    {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "bfloat16"], "shape": [7168, 256],
     "windows": {"cute-dot": [0, 8], "cute-mma": [9, null]}},
    {"op": "router_gemm", "arch": "sm_90a", "dtypes": ["bfloat16", "float32"], "shape": [3072, 256],
     "windows": {"cute-dot": [0, 64], "cute-mma": null}}]}"""


def test_router_windows_and_reasons_in_explain(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    monkeypatch.setattr(dispatch.tuning, "table", lambda: dispatch.tuning.parse(TABLE))
    p = router_problem(BF16, BF16, 7168, 256)  # a preset shape: the table's entry
    at_1, at_9, at_big = (router.OP.explain(p, m) for m in (1, 9, 10**5))
    assert (at_1.tier, at_9.tier, at_big.tier) == ("cute-dot", "cute-mma", "cute-mma")
    assert dict(at_1.steps)["cute-mma"] == "skipped: the tuning table gives it M in [9, inf]"
    assert at_1.tuning_source == dispatch.tuning.table()[0]
    assert router.OP.explain(router_problem(BF16, BF16, 64, 8), 1).tuning_source.startswith("built-in default")
    # fp32 weights, tensor cores off: the dot kernel up to M = 64, torch's fp32 GEMM beyond (cuBLAS
    # bf16 cannot take them)
    p32 = router_problem(BF16, FP32, 3072, 256)
    assert [router.OP.explain(p32, m).tier for m in (1, 64, 65)] == ["cute-dot", "cute-dot", "torch"]
    text = str(router.OP.explain(p32, 65))
    assert "* torch: runs" in text and "- cute-dot: skipped: the tuning table gives it M in [0, 64]" in text
    assert "- cublas: skipped: needs x and weight of one 16-bit dtype" in text


def test_router_kernel_row_limit(monkeypatch, calls):
    simulate(monkeypatch, "sm_90a")
    h = router_tiling.MMA_MAX_H
    p = router_problem(FP16, FP16, h, 8)
    limit = (2**31 - 1) // h
    assert router.OP.explain(p, limit).tier == "cute-mma"
    over = router.OP.explain(p, limit + 1)
    assert over.tier == "cublas" and f"over its limit of {limit} rows" in dict(over.steps)["cute-mma"]
    wide = dict(router.OP.explain(router_problem(BF16, BF16, h + 8), 1).steps)
    assert f"takes H up to {h} with bfloat16 weights" in wide["cute-mma"] and wide["cute-dot"] == "runs"
    assert "H=65544 is over 65536" in dict(router.OP.explain(router_problem(BF16, BF16, 65544), 1).steps)[
        "cute-dot"]
    fp32_w = dict(router.OP.explain(router_problem(BF16, FP32, h // 2 + 8), 1000).steps)
    assert f"takes H up to {h // 2} with float32 weights" in fp32_w["cute-mma"]


def norm_problem(gate_dtype=BF16, h=64, dense=True, device=CUDA0):
    return norm_router.NormRouterProblem(device, BF16, FP32, gate_dtype, FP32, h, torch.Size([8, h]), dense)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a", "sm_100a"])
@pytest.mark.parametrize("gate_dtype", [BF16, FP32, FP16])
def test_norm_router_selection(monkeypatch, calls, arch, gate_dtype):
    simulate(monkeypatch, arch)
    hopper = arch != "sm_80"
    for m in (1, 64, 65):
        got = norm_router.OP.explain(norm_problem(gate_dtype), m)
        steps = dict(got.steps)
        if hopper and gate_dtype != FP16:
            want = "cute-fused"
        elif hopper:
            want = "unfused"  # the router GEMM of fp32 rows has its dot kernel (fp16 weights too)
            assert steps["cute-fused"] == "skipped: gate_weight must be bfloat16 or float32; got float16"
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
    assert silu_quant.OP.explain(silu, 16).tier == ("cute" if hopper else "torch")
    assert silu_quant.OP.explain(silu._replace(dense=False), 16).tier == "torch"
    cpu_ub = silu._replace(scale_ub=(FP32, torch.device("cpu"), 1))
    if hopper:
        assert "scale_ub is on cpu" in dict(silu_quant.OP.explain(cpu_ub, 1).steps)["cute"]
        over = silu_quant.OP.explain(silu, (2**31 - 1) // 4096 + 1)
        assert over.tier == "torch" and "over its limit" in dict(over.steps)["cute"]
    pack = topk.PackTopkProblem(device, torch.int64, FP32, 8, True)
    assert topk.OP.explain(pack, 1).tier == ("cute" if hopper else "torch")
    assert topk.OP.explain(pack._replace(dense=False), 1).tier == "torch"
    if arch is None:
        assert dict(topk.OP.explain(pack, 1).steps)["cute"] == "skipped: tensors are on cpu, not a CUDA GPU"


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
            topk.OP.explain(topk.PackTopkProblem(CUDA0, torch.int32, FP32, 8, True), 2**31)


def test_register_and_remove_a_tier(gen):
    ran = []

    def mine(x, weight, bias, out_dtype, out):
        ran.append(x.shape[0])
        return spec.router_gemm(x, weight, bias, out_dtype)

    dispatch.register_tier("router_gemm", "mine", lambda p: None if p.hidden == 64 else "only H=64", mine,
                           before="torch")
    try:
        assert router.OP.names() == ["cute-mma", "cute-dot", "cublas", "mine", "torch"]
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
        assert topk.OP.names() == ["first", "cute", "second", "torch"]
        assert dispatch.pack_topk(torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, 1)) == "first"
    finally:
        dispatch.remove_tier("router_gemm", "mine")
        for name in ("first", "second"):
            if name in topk.OP.names():
                dispatch.remove_tier("pack_topk", name)
    assert router.OP.names() == ["cute-mma", "cute-dot", "cublas", "torch"]
    assert topk.OP.names() == ["cute", "torch"]


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
    tried, compiled = [], bridge.compiled

    def no_dot_kernel(kernel, device):
        tried.append(kernel.variant)
        if kernel.variant == "dot":
            raise FakeKernelUnavailable("RouterGemm[dot] is in no AOT directory")
        return compiled(kernel, device)

    monkeypatch.setattr(bridge, "compiled", no_dot_kernel)
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
    from cute_kernels import keys

    monkeypatch.setattr(keys, "dsl_available", lambda: False)
    monkeypatch.setattr(cute_kernels.compile, "aot_dir", lambda: None)
    assert environment.kernels_unavailable() == (
        "the CuTe DSL (nvidia-cutlass-dsl) is not installed and no ahead-of-time kernel directory is set "
        "($CUTE_KERNELS_AOT_DIR)")
    monkeypatch.setattr(cute_kernels.compile, "aot_dir", lambda: "/opt/kernels")
    assert environment.kernels_unavailable() is None


def test_warmup_runs_every_tier_a_preset_can_pick(monkeypatch, calls):
    from dispatch import preload

    simulate(monkeypatch, "sm_90a")
    monkeypatch.setattr(preload, "_cuda_device", lambda device: torch.device("cpu"))  # a simulated GPU
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    summary = dispatch.warmup(["deepseek-v3", "deepseek-v4-flash"])
    windows, _ = tuning.windows("router_gemm", "sm_90a", ("bfloat16", "bfloat16"), (7168, 256))
    first_m = sorted((max(w[0], 1), tier) for tier, w in windows.items() if w is not None)  # first M >= 1
    steps = ("router_topk", "norm_router_topk")
    assert [c for c in summary.calls if c[0] == "deepseek-v3" and c[1] not in steps] == [
        # cuBLAS needs a real GPU: on the simulated one its window falls through to torch.
        ("deepseek-v3", "router_gemm", m, "torch" if tier == "cublas" else tier) for m, tier in first_m] + [
        ("deepseek-v3", "silu_mul_quant_fp8", 1, "cute")] + [("deepseek-v3", "pack_topk", 1, "cute")] * 4
    assert ("deepseek-v4-flash", "norm_router_gemm", 1, "cute-fused") in summary.calls
    assert ("deepseek-v3", "router_topk", 1, "cute-fused") in summary.calls
    assert ("deepseek-v4-flash", "norm_router_topk", 1, "cute-fused") in summary.calls
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


# -- the CuTe tiers' per-call path ---------------------------------------------------------------
def offset(t, elems=1):
    """Same values one element into a buffer: the data pointer loses its 16-byte alignment."""
    return t.new_empty(t.numel() + elems)[elems:].view(t.shape).copy_(t)


def strided(t):
    """Same values in every other element of a buffer (not contiguous)."""
    return t.new_empty(*t.shape[:-1], 2 * t.shape[-1])[..., ::2].copy_(t)


def test_router_fast_path_checks_what_a_call_can_change(monkeypatch, calls, gen):
    """After a problem's plan is cached, each call still checks what the key leaves open: a call
    that breaks the kernel's needs falls back or raises naming the argument, never launches."""
    simulate(monkeypatch, "sm_90a")
    x, w = torch.randn(3, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    got = dispatch.router_gemm(x, w)  # caches the plan
    assert torch.equal(got, spec.router_gemm(x, w)) and calls == [("router_gemm", "dot", 3)]
    (kernel, (lx, lw, unread, lout, _workspace)), = calls.raw
    assert lx is x and lw is w and lout is got and kernel.bias_dtype is None and unread.shape == (1,)
    for bad_x in (offset(x), x.t().contiguous().t(), strided(x)):
        torch.testing.assert_close(dispatch.router_gemm(bad_x, w), spec.router_gemm(x, w))  # the torch tier
    assert len(calls.raw) == 1
    out = torch.empty(3, 8)
    assert dispatch.router_gemm(x, w, out=out) is out and torch.equal(out, spec.router_gemm(x, w))
    assert calls.raw[-1][1][3] is out
    for bad_out, error in ((torch.empty(3, 9), ValueError), (torch.empty(2, 8), ValueError),
                           (torch.empty(3, 8, dtype=BF16), TypeError),
                           (x.view(-1).view(FP32)[:24].view(3, 8), ValueError)):  # out overlaps x
        with pytest.raises(error, match=r"\bout\b"):
            dispatch.router_gemm(x, w, out=bad_out)
    with pytest.raises(ValueError, match=r"\bweight\b"):
        dispatch.router_gemm(x, w.to("meta"))
    with pytest.raises(ValueError, match=r"\bout\b"):
        dispatch.router_gemm(x, w, out=torch.empty(3, 8, device="meta"))
    bias = torch.randn(8, generator=gen)
    assert torch.equal(dispatch.router_gemm(x, w, bias), spec.router_gemm(x, w, bias))
    assert calls.raw[-1][1][2] is bias and calls.raw[-1][0].bias_dtype == "float32"
    n = len(calls.raw)
    torch.testing.assert_close(dispatch.router_gemm(x, w, strided(bias)), spec.router_gemm(x, w, bias))
    assert len(calls.raw) == n  # a strided bias is not dense: the torch tier ran


def test_other_fast_paths_check_what_a_call_can_change(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    ids, wts = torch.randint(0, 64, (5, 8), generator=gen), torch.rand(5, 8, generator=gen)
    assert torch.equal(dispatch.pack_topk(ids, wts), spec.pack_topk(ids, wts))
    assert calls.raw[-1][0].vec == 8  # 16-byte aligned int64 ids: 8 per thread
    assert torch.equal(dispatch.pack_topk(ids, offset(wts)), spec.pack_topk(ids, wts))
    assert calls.raw[-1][0].vec == 1  # a 4-byte aligned pointer: no wider access
    with pytest.raises(ValueError, match=r"\bweights\b"):
        dispatch.pack_topk(ids, wts[:4])
    with pytest.raises(ValueError, match=r"\bout\b"):
        dispatch.pack_topk(ids, wts, out=torch.empty(5, 8, dtype=torch.int32)[:4])
    assert len(calls.raw) == 2

    x, nw, g = torch.randn(2, 64, generator=gen).to(BF16), torch.rand(64, generator=gen) + 0.5, \
        torch.randn(8, 64, generator=gen).to(BF16)
    normed, logits = dispatch.norm_router_gemm(x, nw, g)
    assert calls[-1] == ("norm_router_gemm", None, 2)
    want = spec.norm_router_gemm(x, nw, g)
    assert torch.equal(normed, want[0]) and torch.equal(logits, want[1])
    got = dispatch.norm_router_gemm(x, offset(nw), g)  # TMA cannot load a misaligned norm weight
    assert calls[-1] == ("norm_router_gemm", None, 2) and len(calls.raw) == 3
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"\bnormed_out\b"):
        dispatch.norm_router_gemm(x, nw, g, normed_out=torch.empty(2, 63, dtype=BF16))
    with pytest.raises(ValueError, match=r"\blogits_out\b"):
        dispatch.norm_router_gemm(x, nw, g, logits_out=g.view(FP32)[:2])

    xs = torch.randn(4, 256, generator=gen).to(BF16)
    q, sc = dispatch.silu_mul_quant_fp8(xs, 64, scale_layout="col")
    assert calls[-1] == ("silu_mul_quant_fp8", None, 4) and sc.stride() == (1, 4)
    want = spec.silu_mul_quant_fp8(xs, 64, scale_layout="col")
    assert torch.equal(q.view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(sc, want[1])
    with pytest.raises(ValueError, match=r"\bscales\b"):
        dispatch.silu_mul_quant_fp8(xs, 64, scale_layout="col", scales=torch.empty(3, 4).t())  # [4, 3]
    with pytest.raises(TypeError, match=r"\bout\b"):
        dispatch.silu_mul_quant_fp8(xs, 64, scale_layout="col", out=torch.empty(4, 128, dtype=BF16))
    assert len(calls.raw) == 4


def test_a_launch_makes_the_tensors_device_current(monkeypatch, calls, gen):
    simulate(monkeypatch, "sm_90a")
    entered = []

    class Device:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append(None)

    monkeypatch.setattr(bridge, "current_device", lambda: 1)  # another device than the tensors'
    monkeypatch.setattr(torch.cuda, "device", Device)
    x, w = torch.randn(2, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    dispatch.router_gemm(x, w)
    assert entered == [x.device, None] and len(calls.raw) == 1


def test_a_capture_never_loads_a_kernel(monkeypatch, calls, gen):
    """Warmed up, a capture launches from the launcher's map; a new M under capture would need a
    load, which is refused."""
    simulate(monkeypatch, "sm_90a")
    x, w = torch.randn(2, 64, generator=gen).to(BF16), torch.randn(8, 64, generator=gen).to(BF16)
    dispatch.router_gemm(x, w)  # warm: M = 2's function is kept
    monkeypatch.setattr(bridge, "compiled", REAL_COMPILED)
    monkeypatch.setattr(bridge, "device_arch", lambda index: "sm_90a")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    dispatch.router_gemm(x, w)
    assert calls == [("router_gemm", "dot", 2)] * 2
    with pytest.raises(RuntimeError, match="not loaded yet and a CUDA graph is being captured"):
        dispatch.router_gemm(x[:1], w)


def test_a_launcher_keeps_a_bounded_map(monkeypatch):
    looked_up = []

    def compiled(kernel, device):
        looked_up.append(kernel)
        return lambda *args: args[0].append(kernel)

    monkeypatch.setattr(bridge, "compiled", compiled)
    monkeypatch.setattr(bridge, "current_device", lambda: None)
    launcher = bridge.Launcher(lambda key: ("kernel", key), torch.device("cpu"))
    limit, ran = bridge.Launcher.MAX_KEYS, []
    for key in range(limit):
        launcher.launch(key, ran)
        launcher.launch(key, ran)  # kept: no second lookup
    assert ran == [("kernel", k) for k in range(limit) for _ in range(2)]
    assert looked_up == [("kernel", k) for k in range(limit)] and len(launcher.functions) == limit
    for key in range(limit, 3 * limit):
        launcher.launch(key, ran)
        assert len(launcher.functions) <= limit
    assert ran[-1] == ("kernel", 3 * limit - 1)
    launcher.launch(0, ran)  # dropped when the map started over: looked up again
    assert looked_up[-1] == ("kernel", 0) and ran[-1] == ("kernel", 0)
    default_cache().clear_memory()
    assert launcher.functions == {}


@pytest.mark.parametrize("packed", [False, True])
def test_routing_steps_run_their_fused_kernels_with_spec_results(monkeypatch, calls, gen, packed):
    """The fused tiers' launchers pass the kernels what they read (logits room, counters,
    correction bias, outputs): the recorders' spec results come back as the op's."""
    from cute_kernels import presets

    simulate(monkeypatch, "sm_90a")
    p = presets.get("deepseek-v3")
    x = torch.randn(5, 64, generator=gen).to(BF16)
    w = (torch.randn(256, 64, generator=gen) / 8).to(BF16)
    cbias = torch.randn(256, generator=gen) * 0.1
    want_w, want_ids = spec.router_topk(x, w, routing=p.routing, correction_bias=cbias)
    got = dispatch.router_topk(x, w, routing=p.routing, correction_bias=cbias, packed=packed)
    assert calls[-1] == ("router_topk", None, 5)
    if packed:
        assert torch.equal(got, spec.pack_topk(want_ids, want_w))
    else:
        assert torch.equal(got[1], want_ids) and torch.equal(got[0], want_w)
    q = presets.get("deepseek-v4-flash")
    nw = torch.ones(64, dtype=BF16)
    normed, *rest = dispatch.norm_router_topk(x, nw, w, routing=q.routing, correction_bias=cbias, packed=packed)
    want = spec.norm_router_topk(x, nw, w, routing=q.routing, correction_bias=cbias)
    assert calls[-1] == ("norm_router_topk", None, 5) and torch.equal(normed, want[0])
    assert torch.equal(rest[-1], spec.pack_topk(want[2], want[1]) if packed else want[2])
