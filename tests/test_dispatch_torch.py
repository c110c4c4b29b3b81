"""The torch tiers against the spec, torch integration (custom ops, fake tensors, torch.compile),
graceful degradation, the tuning table and the dispatcher's own cost, on CPU.

Tolerances, compared in float64: fp32 logits within a relative Frobenius error of 1e-5 of the
float64 product (an fp32 GEMM of H terms: about sqrt(H) * 2**-24); bf16 outputs within one bf16
ulp of the float64 value (the fp32 value may sit on the other side of a rounding boundary), plus,
for logits, the fp32 accumulation error of the sum where it cancels to near zero; SiLU
quantisation and top-k packing bit-exact (their torch tier is the spec itself).
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import timeit
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import dispatch
from cute_kernels import reference as spec
from dispatch import environment, tiers, torch_math, tuning
from helpers import rel_frobenius, within_one_bf16_ulp, fp32_sum_error

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
cpu_fallback = pytest.mark.filterwarnings("ignore:cute_kernels dispatch:RuntimeWarning")


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    monkeypatch.delenv(tiers.FORCE_ENV, raising=False)
    monkeypatch.setattr(tiers, "_warned", set())
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()





def make(shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


@cpu_fallback
@pytest.mark.parametrize("xd,wd", [(BF16, BF16), (FP16, FP16), (FP32, FP32), (BF16, FP32), (FP16, BF16)])
@pytest.mark.parametrize("m", [0, 1, 7, 33])
@pytest.mark.parametrize("with_bias", [False, True])
def test_router_gemm_matches_float64(xd, wd, m, with_bias, gen):
    x, w = make((m, 96), xd, gen), make((24, 96), wd, gen)
    bias = make((24,), FP32, gen) if with_bias else None
    exact = x.double() @ w.double().T + (bias.double() if with_bias else 0)
    got = dispatch.router_gemm(x, w, bias)
    assert got.dtype == FP32 and got.shape == (m, 24)
    if m:
        assert rel_frobenius(got, exact) <= 1e-5
    got16 = dispatch.router_gemm(x, w, bias, out_dtype=BF16)
    assert got16.dtype == BF16 and within_one_bf16_ulp(got16, exact, fp32_sum_error(x, w))
    out = torch.full((m, 24), float("nan"))
    assert dispatch.router_gemm(x, w, bias, out=out) is out and torch.equal(out, got)


@cpu_fallback
def test_router_gemm_rejects_what_the_spec_rejects():
    x, w = torch.zeros(2, 8, dtype=BF16), torch.zeros(4, 8, dtype=BF16)
    with pytest.raises(TypeError, match="x must have dtype bfloat16, float16, float32; got int32"):
        dispatch.router_gemm(x.to(torch.int32), w)
    with pytest.raises(ValueError, match="x must be 2-D; got shape"):
        dispatch.router_gemm(x[0], w)
    with pytest.raises(ValueError, match="does not match x's hidden size 8"):
        dispatch.router_gemm(x, torch.zeros(4, 6, dtype=BF16))
    with pytest.raises(ValueError, match="bias has length 3, not the number of experts 4"):
        dispatch.router_gemm(x, w, torch.zeros(3))
    with pytest.raises(TypeError, match="out_dtype must be float32 or bfloat16"):
        dispatch.router_gemm(x, w, out_dtype=FP16)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        dispatch.router_gemm([[1.0]], w)
    with pytest.raises(ValueError, match=r"out must be float32 \[2, 4\]; got float32 \[3, 4\]"):
        dispatch.router_gemm(x, w, out=torch.zeros(3, 4))


@cpu_fallback
@pytest.mark.parametrize("gate_dtype", [BF16, FP32])
@pytest.mark.parametrize("m", [0, 1, 19])
def test_norm_router_gemm_matches_spec(gate_dtype, m, gen):
    x, norm_w, gate = make((m, 128), BF16, gen, 3.0), make((128,), FP32, gen), make((16, 128), gate_dtype, gen)
    normed, logits = dispatch.norm_router_gemm(x, norm_w, gate, 1e-5)
    xd = x.double()
    n = xd / torch.sqrt(xd.square().mean(1, keepdim=True) + 1e-5) * norm_w.double()
    assert normed.dtype == BF16 and within_one_bf16_ulp(normed, n)
    assert logits.dtype == FP32 and logits.shape == (m, 16)
    if m:
        assert rel_frobenius(logits, n @ gate.double().T) <= 1e-5
    spec_normed, spec_logits = spec.norm_router_gemm(x, norm_w, gate, 1e-5, BF16)
    normed_out, logits_out = torch.empty_like(x), torch.empty(m, 16, dtype=BF16)
    got = dispatch.norm_router_gemm(x, norm_w, gate, 1e-5, out_dtype=BF16, normed_out=normed_out,
                                    logits_out=logits_out)
    assert got[0] is normed_out and got[1] is logits_out
    assert within_one_bf16_ulp(logits_out, n @ gate.double().T, fp32_sum_error(n, gate))
    assert within_one_bf16_ulp(normed_out, spec_normed)


@cpu_fallback
@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_silu_mul_quant_is_the_spec(layout, ue8m0, gen):
    x = make((5, 512), BF16, gen, 4.0)
    ub = torch.tensor([0.02])
    q, s = dispatch.silu_mul_quant_fp8(x, 64, scale_ub=ub, ue8m0=ue8m0, scale_layout=layout)
    want_q, want_s = spec.silu_mul_quant_fp8(x, 64, ub, ue8m0, layout)
    assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8)) and torch.equal(s, want_s)
    assert s.stride() == ((4, 1) if layout == "row" else (1, 5))
    out = torch.empty(5, 256, dtype=torch.float8_e4m3fn)
    scales = torch.empty_strided((5, 4), s.stride(), dtype=FP32)
    got_q, got_s = dispatch.silu_mul_quant_fp8(x, 64, scale_ub=ub, ue8m0=ue8m0, scale_layout=layout, out=out,
                                               scales=scales)
    assert got_q is out and got_s is scales and torch.equal(scales, want_s)
    with pytest.raises(ValueError, match="group_size must be 64 or 128; got 32"):
        dispatch.silu_mul_quant_fp8(x, 32)


@cpu_fallback
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("weights_dtype", [FP32, BF16])
def test_pack_topk_is_the_spec(ids_dtype, weights_dtype, gen):
    ids = torch.randint(0, 2**15, (9, 6), generator=gen, dtype=ids_dtype)
    w = torch.rand(9, 6, generator=gen).to(weights_dtype)
    assert torch.equal(dispatch.pack_topk(ids, w), spec.pack_topk(ids, w))
    out = torch.empty(9, 6, dtype=torch.int32)
    assert dispatch.pack_topk(ids, w, out=out) is out and torch.equal(out, spec.pack_topk(ids, w))
    with pytest.raises(ValueError, match=r"weights has shape \(9, 5\), not ids' shape \(9, 6\)"):
        dispatch.pack_topk(ids, w[:, :5])


def test_no_tf32_switch_holds_for_concurrent_gemms():
    """The switch is process-wide: a thread's fp32 GEMM must never see another thread turn TF32
    back on, and the flag ends as the user set it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    seen = []

    def gemms():
        for _ in range(100):
            with torch_math._ieee_fp32_matmul():
                time.sleep(1e-4)  # where a GEMM would be issued
                seen.append(torch.backends.cuda.matmul.allow_tf32)

    try:
        threads = [threading.Thread(target=gemms) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 400 and not any(seen)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# -- torch integration ---------------------------------------------------------------------------
def fake_outputs(device_ctx):
    """Runs every custom op on tensors made under ``device_ctx`` and returns the outputs."""
    with device_ctx as maker:
        x, w = maker((6, 64), BF16), maker((8, 64), BF16)
        xs = maker((6, 512), BF16)
        ids, wts = maker((6, 4), torch.int32), maker((6, 4), FP32)
        return {
            "router": torch.ops.cute_kernels.router_gemm(x, w, None, BF16),
            "norm": torch.ops.cute_kernels.norm_router_gemm(x, maker((64,), FP32), w, 1e-6, FP32),
            "silu_row": torch.ops.cute_kernels.silu_mul_quant_fp8(xs, 128, None, False, "row"),
            "silu_col": torch.ops.cute_kernels.silu_mul_quant_fp8(xs, 128, None, False, "col"),
            "pack": torch.ops.cute_kernels.pack_topk(ids, wts),
        }


class _Meta:
    def __enter__(self):
        return lambda shape, dtype: torch.empty(shape, dtype=dtype, device="meta")

    def __exit__(self, *exc):
        return False


class _Fake:
    def __enter__(self):
        self.mode = FakeTensorMode()
        self.mode.__enter__()
        return lambda shape, dtype: torch.empty(shape, dtype=dtype)

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


@pytest.mark.parametrize("ctx", [_Meta, _Fake], ids=["meta", "fake"])
def test_fake_implementations_give_shapes_dtypes_and_strides(ctx):
    out = fake_outputs(ctx())
    assert (out["router"].shape, out["router"].dtype) == ((6, 8), BF16)
    normed, logits = out["norm"]
    assert (normed.shape, normed.dtype, logits.shape, logits.dtype) == ((6, 64), BF16, (6, 8), FP32)
    for layout, strides in (("row", (2, 1)), ("col", (1, 6))):
        q, s = out[f"silu_{layout}"]
        assert (q.shape, q.dtype, q.stride()) == ((6, 256), torch.float8_e4m3fn, (256, 1))
        assert (s.shape, s.dtype, s.stride()) == ((6, 2), FP32, strides)
    assert (out["pack"].shape, out["pack"].dtype) == ((6, 4), torch.int32)


def test_public_functions_accept_meta_tensors_without_warning(recwarn):
    x, w = torch.empty(3, 64, dtype=BF16, device="meta"), torch.empty(8, 64, dtype=BF16, device="meta")
    y = dispatch.router_gemm(x, w)
    assert y.device.type == "meta" and y.shape == (3, 8)
    assert "tensors are on meta" in dict(dispatch.explain("router_gemm", x, w).steps)["cute-dot"]
    assert not [w for w in recwarn if "cute_kernels dispatch" in str(w.message)]


@cpu_fallback
def test_opcheck_every_custom_op(gen):
    x, w = make((5, 64), BF16, gen), make((8, 64), BF16, gen)
    cases = [
        (torch.ops.cute_kernels.router_gemm.default, (x, w, make((8,), FP32, gen), FP32)),
        (torch.ops.cute_kernels.norm_router_gemm.default, (x, make((64,), FP32, gen), w, 1e-6, BF16)),
        (torch.ops.cute_kernels.silu_mul_quant_fp8.default, (make((5, 512), BF16, gen), 128, None, False, "col")),
        (torch.ops.cute_kernels.pack_topk.default,
         (torch.randint(0, 99, (5, 4), generator=gen), make((5, 4), FP32, gen))),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def gate_step(x, w, bias, norm_w, xs, ids, weights):
    """Every dispatched op once, as a model would call them."""
    logits = dispatch.router_gemm(x, w, bias, out_dtype=BF16)
    normed, norm_logits = dispatch.norm_router_gemm(x, norm_w, w)
    q, s = dispatch.silu_mul_quant_fp8(xs, 64, scale_layout="col")
    return logits, normed, norm_logits, q.view(torch.uint8), s, dispatch.pack_topk(ids, weights)


@cpu_fallback
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_each_op(dynamic, gen):
    torch._dynamo.reset()
    compiled = torch.compile(gate_step, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for m in (3, 17):
        args = (make((m, 64), BF16, gen), make((8, 64), BF16, gen), make((8,), FP32, gen), make((64,), FP32, gen),
                make((m, 256), BF16, gen), torch.randint(0, 99, (m, 4), generator=gen), make((m, 4), FP32, gen))
        for got, want in zip(compiled(*args), gate_step(*args)):
            assert got.shape == want.shape and got.dtype == want.dtype and got.stride() == want.stride()
            assert torch.equal(got, want)


@cpu_fallback
def test_compile_with_out_arguments(gen):
    def step(x, w, out, ids, weights, packed):
        dispatch.router_gemm(x, w, out=out)
        dispatch.pack_topk(ids, weights, out=packed)
        return out.sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x, w = make((4, 64), BF16, gen), make((8, 64), BF16, gen)
    ids, weights = torch.randint(0, 99, (4, 2), generator=gen), make((4, 2), FP32, gen)
    out, packed = torch.zeros(4, 8), torch.zeros(4, 2, dtype=torch.int32)
    compiled(x, w, out, ids, weights, packed)
    assert torch.equal(out, dispatch.router_gemm(x, w)) and torch.equal(packed, spec.pack_topk(ids, weights))


@cpu_fallback
def test_compile_with_inductor(gen):
    def route(x, w):
        logits = dispatch.router_gemm(x, w)
        weights, ids = torch.topk(logits.softmax(-1), 2)
        return dispatch.pack_topk(ids, weights)

    torch._dynamo.reset()
    compiled = torch.compile(route, fullgraph=True)
    x, w = make((6, 64), BF16, gen), make((8, 64), BF16, gen)
    assert torch.equal(compiled(x, w), route(x, w))


# -- degradation ---------------------------------------------------------------------------------
def dispatch_warnings(record):
    return [str(w.message) for w in record if "cute_kernels dispatch" in str(w.message)]


def test_cpu_tensors_warn_once(gen):
    with pytest.warns(RuntimeWarning) as record:
        for m in (1, 2, 40):
            x = make((m, 64), BF16, gen)
            dispatch.router_gemm(x, make((8, 64), BF16, gen))
            dispatch.norm_router_gemm(x, torch.ones(64), make((8, 64), BF16, gen))
            dispatch.silu_mul_quant_fp8(make((m, 256), BF16, gen))
            dispatch.pack_topk(torch.zeros(m, 2, dtype=torch.int32), torch.zeros(m, 2))
    messages = dispatch_warnings(record)
    assert len(messages) == 1, messages
    assert messages[0].startswith("cute_kernels dispatch: tensors are on cpu, not a CUDA GPU; router_gemm")


def test_pre_hopper_gpu_warns_once(monkeypatch, gen):
    monkeypatch.setattr(environment, "device_arch", lambda device: "sm_80")
    x, w = make((4, 64), BF16, gen), make((8, 64), BF16, gen)
    with pytest.warns(RuntimeWarning) as record:
        got = dispatch.router_gemm(x, w)
        dispatch.router_gemm(x, w, out_dtype=BF16)
        dispatch.pack_topk(torch.zeros(1, 2, dtype=torch.int32), torch.zeros(1, 2))
    assert rel_frobenius(got, x.double() @ w.double().T) <= 1e-5
    messages = dispatch_warnings(record)
    assert len(messages) == 1 and "cpu is sm_80; the CuTe kernels need sm_90 or newer" in messages[0], messages


REPO_ROOT = str(Path(dispatch.__file__).resolve().parent.parent)
NO_DSL = str(Path(__file__).with_name("no_dsl"))  # its sitecustomize makes the DSL absent
NO_DSL_SCRIPT = textwrap.dedent("""
    import json, warnings

    import torch
    import dispatch
    from dispatch import environment
    environment.device_arch = lambda device: "sm_90a"  # a Hopper GPU, but no DSL
    x, w = torch.randn(4, 64).to(torch.bfloat16), torch.randn(8, 64).to(torch.bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logits = dispatch.router_gemm(x, w)
        dispatch.router_gemm(x, w)
        packed = dispatch.pack_topk(torch.tensor([[3, 4]]), torch.tensor([[0.5, 0.25]]))
    print(json.dumps({
        "warnings": [str(w.message) for w in caught if "cute_kernels dispatch" in str(w.message)],
        "explain": str(dispatch.explain("router_gemm", x, w)),
        "error": float((logits.double() - x.double() @ w.double().T).norm() / (x.double() @ w.double().T).norm()),
        "packed": packed.tolist(),
    }))
""")


ABSENT_DSL_SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    assert importlib.util.find_spec("cutlass") is None
    import torch  # torch >= 2.14 probes for the DSL at import: it must see it as missing, not broken
    try:
        import cutlass.cute
        sys.exit("cutlass imported")
    except ModuleNotFoundError:
        pass
    print(torch.__version__)
""")


def test_the_dsl_blocker_makes_the_dsl_absent(tmp_path):
    result = subprocess.run([sys.executable, "-c", ABSENT_DSL_SCRIPT], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": NO_DSL})
    assert result.returncode == 0, result.stderr[-3000:]


def test_without_the_dsl_torch_tiers_run_with_one_warning(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_DSL_SCRIPT], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": os.pathsep.join([NO_DSL, REPO_ROOT])})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "the CuTe DSL (nvidia-cutlass-dsl) is not installed and no ahead-of-time kernel directory" in out[
        "warnings"][0]
    assert "* torch: runs" in out["explain"] and "- cute-dot: skipped: the CuTe DSL (nvidia-cutlass-dsl) is not" in out[
        "explain"]
    assert out["error"] <= 1e-5
    assert out["packed"] == [[(3 << 16) | 0x3F00, (4 << 16) | 0x3E80]]


# -- tuning table --------------------------------------------------------------------------------
def test_table_format_errors_are_clear():
    with pytest.raises(ValueError, match="expected an object with a 'source' string"):
        tuning.parse('{"entries": []}')
    with pytest.raises(ValueError, match="entry 0 is malformed"):
        tuning.parse('{"source": "s", "entries": [{"op": "router_gemm"}]}')
    with pytest.raises(ValueError, match="0 <= lo <= hi"):
        tuning.parse('{"source": "s", "entries": [{"op": "o", "arch": "a", "dtypes": [], "shape": [1], '
                     '"windows": {"t": [9, 8]}}]}')
    source, entries = tuning.parse('{"source": "s", "entries": [{"op": "o", "arch": "a", "dtypes": ["x"], '
                                   '"shape": [1, 2], "windows": {"t": [3, null]}}]}')
    assert entries == {("o", "a", ("x",), (1, 2)): {"t": (3, tuning.NO_LIMIT)}}


def test_default_windows():
    assert tuning.default_windows("router_gemm", ("bfloat16", "bfloat16")) == {
        "cute-dot": (0, 8), "cute-mma": (9, tuning.NO_LIMIT)}
    assert tuning.default_windows("router_gemm", ("float16", "float16")) == {"cute-mma": (0, tuning.NO_LIMIT)}
    assert tuning.default_windows("router_gemm", ("bfloat16", "float32")) == {
        "cute-dot": (0, 8), "cute-mma": (9, tuning.NO_LIMIT)}
    assert tuning.default_windows("router_gemm", ("float32", "float32")) == {"cute-dot": (0, 64)}
    assert tuning.default_windows("pack_topk", ("int32", "float32")) == {}


# -- host cost, warmup ---------------------------------------------------------------------------
@cpu_fallback
def test_dispatcher_overhead_with_a_no_op_tier():
    """The dispatcher's own cost per eager call (printed; the bound only catches regressions)."""
    def noop(x, weight, bias, out_dtype, out):
        return None

    dispatch.register_tier("router_gemm", "noop", lambda p: None, noop)
    try:
        x, w = torch.zeros(1, 7168, dtype=BF16), torch.zeros(256, 7168, dtype=BF16)
        dispatch.router_gemm(x, w)
        n = 20000
        direct = min(timeit.repeat(lambda: noop(x, w, None, FP32, None), number=n, repeat=5)) / n
        through = min(timeit.repeat(lambda: dispatch.router_gemm(x, w), number=n, repeat=5)) / n
    finally:
        dispatch.remove_tier("router_gemm", "noop")
    own_us = (through - direct) * 1e6
    print(f"dispatcher's own cost per router_gemm call at M=1: {own_us:.2f} us")
    assert own_us < 25


def test_warmup_without_a_gpu_has_nothing_to_warm():
    summary = dispatch.warmup(["deepseek-v3"], m_values=[1, 64], device="cpu")
    assert summary.device is None and summary.calls == []
    assert "nothing to warm" in str(summary)
    if not torch.cuda.is_available():
        assert dispatch.warmup(["deepseek-v3"]).device is None


# -- inference only --------------------------------------------------------------------------------
def _grad_calls(gen):
    x = torch.randn(4, 64, generator=gen).to(BF16)
    w = torch.randn(8, 64, generator=gen).to(BF16)
    ids, weights = torch.randint(0, 8, (4, 2), generator=gen), torch.rand(4, 2, generator=gen)
    return {
        "router_gemm": (dispatch.router_gemm, (x, w)),
        "norm_router_gemm": (dispatch.norm_router_gemm, (x, torch.ones(64, dtype=BF16), w)),
        "silu_mul_quant_fp8": (dispatch.silu_mul_quant_fp8, (torch.randn(4, 256, generator=gen).to(BF16),)),
        "pack_topk": (dispatch.pack_topk, (ids, weights)),
    }


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("op", ["router_gemm", "norm_router_gemm", "silu_mul_quant_fp8", "pack_topk"])
def test_an_input_that_requires_grad_is_refused_unless_grad_is_off(gen, op, compiled):
    fn, args = _grad_calls(gen)[op]
    floats = [i for i, a in enumerate(args) if a.is_floating_point()]
    wanting = list(args)
    wanting[floats[-1]] = args[floats[-1]].clone().requires_grad_()
    call = torch.compile(fn, fullgraph=True, dynamic=False) if compiled else fn
    for _ in range(2):  # the refusal holds for a cached problem too
        with pytest.raises(RuntimeError, match=f"dispatch.{op} is an inference op .* torch.no_grad()"):
            call(*wanting)
    want = fn(*args)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            got = call(*wanting)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g.float(), w.float()) and not g.requires_grad
