"""router_gemm on the GPU against the float64 spec: presets, random shapes, every dtype pair.

Tolerances (against the float64 product of the same inputs):
- fp32 out: relative Frobenius error <= 1e-5. The kernel accumulates in fp32 over H <= 16384
  terms (split across up to 32 CTAs, then summed): the rounding error of such a sum is ~1e-7
  relative for these random inputs, so 1e-5 catches any lost or doubled term.
- bf16 out: within one bf16 ulp of the float64 result rounded to bf16 (the fp32 sum may sit on
  the other side of a rounding boundary), plus the fp32 accumulation bound 2^-22 * sum|x w|,
  which matters only where the terms cancel to a result far below their size.
"""

import dataclasses
import random

import pytest
import torch

import cute_kernels
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import bridge, ops, presets, reference
from helpers import run_on_busy_stream

pytestmark = pytest.mark.gpu
M_VALUES = [0, 1, 2, 3, 5, 8, 13, 16, 31, 64, 127, 128, 256]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# 24 shapes: H a multiple of 8 in [64, 16384], E in [1, 1024]; fixed so failures reproduce.
_rng = random.Random(20261122)
RANDOM_SHAPES = [(8 * _rng.randint(8, 2048), _rng.randint(1, 1024)) for _ in range(22)] + [(64, 1), (16384, 1024)]


def make(m, h, e, x_dtype, w_dtype, bias_dtype, gen):
    x = torch.randn(m, h, generator=gen).to(x_dtype).cuda()
    w = torch.randn(e, h, generator=gen).to(w_dtype).cuda()
    b = None if bias_dtype is None else (torch.randn(e, generator=gen) * 4).to(bias_dtype).cuda()
    return x, w, b


def assert_matches(got, x, w, b=None):
    exact = x.double() @ w.double().T + (0 if b is None else b.double())
    assert not torch.isnan(got).any(), "NaN left in the output (an element was never written)"
    if got.dtype == torch.float32:
        err = torch.linalg.norm(got.double() - exact) / max(torch.linalg.norm(exact).item(), 1e-300)
        assert err <= 1e-5, f"relative Frobenius error {err:.3g}"
    else:
        ref = reference.router_gemm(x, w, b, out_dtype=torch.bfloat16).double()
        ulp = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(2.0**-126))) - 7)
        budget = ulp + 2.0**-22 * (x.double().abs() @ w.double().abs().T)
        bad = (got.double() - ref).abs() > budget
        assert not bad.any(), f"{bad.sum().item()} elements beyond 1 bf16 ulp, e.g. {got[bad][:4]} vs {ref[bad][:4]}"


def run(x, w, b=None, out_dtype=torch.float32, **kw):
    out = torch.full((x.shape[0], w.shape[0]), float("nan"), dtype=out_dtype, device="cuda")
    got = cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=out, **kw)
    torch.cuda.synchronize()
    assert got is out
    assert_matches(got, x, w, b)
    return got


@pytest.mark.parametrize("preset", list(presets.PRESETS))
@pytest.mark.parametrize("m", M_VALUES)
def test_presets(preset, m, gen):
    p = presets.get(preset)
    bias = p.gate_dtype if p.gate_bias else None
    x, w, b = make(m, p.hidden_size, p.num_experts, torch.bfloat16, DTYPES[p.gate_dtype],
                   DTYPES[bias] if bias else None, gen)
    run(x, w, b, DTYPES[p.logits_dtype])


@pytest.mark.parametrize("h,e", RANDOM_SHAPES)
@pytest.mark.parametrize("m", [0, 1, 3, 13, 64, 256])
@pytest.mark.parametrize("variant,w_dtype", [("dot", torch.bfloat16), ("mma", torch.bfloat16),
                                             ("mma", torch.float32)])
def test_random_shapes(h, e, m, variant, w_dtype, gen):
    run(*make(m, h, e, torch.bfloat16, w_dtype, None, gen), variant=variant)


@pytest.mark.parametrize("x_dtype", list(DTYPES))
@pytest.mark.parametrize("w_dtype", list(DTYPES))
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias_dtype", [None, "bfloat16", "float32"])
@pytest.mark.parametrize("m", [1, 31])
def test_dtype_combinations(x_dtype, w_dtype, out_dtype, bias_dtype, m, gen):
    x, w, b = make(m, 3072, 200, DTYPES[x_dtype], DTYPES[w_dtype], DTYPES.get(bias_dtype), gen)
    run(x, w, b, out_dtype)


@pytest.mark.parametrize("variant", ["dot", "mma"])
@pytest.mark.parametrize("m", [1, 7, 9, 65, 300])
@pytest.mark.parametrize("pdl", [True, False])
def test_both_variants_any_m(variant, m, pdl, gen):
    run(*make(m, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen), variant=variant, pdl=pdl)


@pytest.mark.parametrize("x_dtype,variant", [(torch.float32, "dot"), (torch.bfloat16, "dot"),
                                             (torch.bfloat16, "mma")])
def test_fp32_weights_are_not_rounded(x_dtype, variant, gen):
    """Weights with more than bf16's 8 mantissa bits: any rounding to bf16/TF32 shows up at 1e-3,
    a dropped third part (tensor cores) at 1e-5 in ``run``'s check."""
    x, w, _ = make(16, 3072, 256, x_dtype, torch.float32, None, gen)
    w = w + 1e-3 * torch.randn_like(w)
    got = run(x, w, variant=variant)
    rounded = (x.double() @ w.to(torch.bfloat16).double().T)
    assert (got.double() - rounded).abs().max() > 1e-3


def test_allocates_output(gen):
    x, w, b = make(5, 2880, 128, torch.bfloat16, torch.bfloat16, torch.bfloat16, gen)
    got = cute_kernels.router_gemm(x, w, b, out_dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == (5, 128)
    assert_matches(got, x, w, b)


def test_non_default_stream_orders_after_producer(gen):
    x, w, _ = make(16, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen)
    got = run_on_busy_stream(cute_kernels.router_gemm, x, w)
    assert_matches(got, x, w)


@pytest.mark.parametrize("pdl", [True, False])
@pytest.mark.parametrize("m", [1, 16, 128])
def test_cuda_graph_replay_with_new_inputs(pdl, m, gen):
    x, w, _ = make(m, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen)
    out = torch.empty(m, 256, device="cuda")
    out2 = torch.empty(m, 256, device="cuda")
    cute_kernels.router_gemm(x, w, out=out, pdl=pdl)  # loads outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cute_kernels.router_gemm(x, w, out=out, pdl=pdl)
        cute_kernels.router_gemm(x, w, out=out2, pdl=pdl)  # back to back: a PDL chain
    for _ in range(3):
        x.copy_(torch.randn(m, 7168, generator=gen).to(torch.bfloat16))
        w.copy_(torch.randn(256, 7168, generator=gen).to(torch.bfloat16))
        out.fill_(float("nan"))
        out2.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert_matches(out, x, w)
        assert_matches(out2, x, w)


@pytest.mark.parametrize("variant,m", [("dot", 1), ("dot", 8), ("mma", 16), ("mma", 128)])
def test_deterministic(variant, m, gen):
    """Fixed-order reduction (the arrival counter only elects who sums): 100 runs give identical bits."""
    x, w, _ = make(m, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen)
    first = cute_kernels.router_gemm(x, w, variant=variant)
    for _ in range(100):
        assert torch.equal(cute_kernels.router_gemm(x, w, variant=variant), first)


def through_the_workspace(m):
    """DeepSeek-V3's tensor-core specialisation for M with its split reduced through the global
    workspace (the defaults reduce across a cluster)."""
    kernel = router_tiling.pick("bfloat16", "bfloat16", "float32", None, m, 7168, 256, "mma", True)
    return dataclasses.replace(kernel, reduce="global")


def test_split_workspaces_are_per_stream(gen):
    """The global split-K reduction on two streams at once: each stream has its own workspace."""
    problems = [make(64, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen) for _ in range(2)]
    config = through_the_workspace(64)
    assert config.uses_workspace
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    torch.cuda.synchronize()
    launched = []
    for _ in range(20):
        for stream, (x, w, _) in zip(streams, problems):
            with torch.cuda.stream(stream):
                launched.append((cute_kernels.router_gemm(x, w, config=config), x, w))
    torch.cuda.synchronize()
    for got, x, w in launched:
        assert_matches(got, x, w)


@pytest.mark.filterwarnings("ignore:The CUDA Graph is empty")
def test_capture_needing_a_larger_workspace_is_a_clear_error(monkeypatch, gen):
    monkeypatch.setattr(bridge, "WORKSPACE_MIN_INTS", 0)
    monkeypatch.setattr(bridge, "_workspaces", {})
    x, w, _ = make(128, 7168, 256, torch.bfloat16, torch.bfloat16, None, gen)
    config = through_the_workspace(128)  # one specialisation for both sizes; M = 128 needs more workspace
    cute_kernels.router_gemm(x[:16], w, config=config)
    cute_kernels.router_gemm(x, w, config=config)
    monkeypatch.setattr(bridge, "_workspaces", {})
    cute_kernels.router_gemm(x[:16], w, config=config)
    g = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="split-K workspace"):
        with torch.cuda.graph(g):
            cute_kernels.router_gemm(x, w, config=config)


@pytest.mark.parametrize("w_dtype", [torch.bfloat16, torch.float32])
def test_nan_and_inf_propagate(w_dtype, gen):
    """Also where fp32 weights enter the tensor cores in parts: an infinite x times a zero part
    must not turn the row's infinities into NaN."""
    x, w, _ = make(4, 1024, 64, torch.bfloat16, w_dtype, None, gen)
    x[0, 5] = float("nan")
    x[1, 7] = float("inf")
    w[3, 9] = float("-inf")
    w[5, :8] = 0.5  # parts below the first are zero
    x[2, 3] = float("inf")
    for variant in ("dot", "mma"):
        got = cute_kernels.router_gemm(x, w, variant=variant)
        want = reference.router_gemm(x, w)
        assert torch.equal(torch.isnan(got), torch.isnan(want)), variant
        assert torch.equal(torch.isinf(got), torch.isinf(want)), variant
        assert torch.equal(got[got.isinf()], want[want.isinf()]), variant


def test_rejects_what_it_cannot_do(gen):
    x, w, _ = make(4, 1024, 64, torch.bfloat16, torch.bfloat16, None, gen)
    op = cute_kernels.router_gemm
    with pytest.raises(ValueError, match="x must be 16-byte aligned"):
        op(torch.empty(4 * 1024 + 1, dtype=torch.bfloat16, device="cuda")[1:].view(4, 1024), w)
    with pytest.raises(ValueError, match="weight must be contiguous"):
        op(x, torch.empty(1024, 64, dtype=torch.bfloat16, device="cuda").T)
    with pytest.raises(ValueError, match="weight is on cpu"):
        op(x, w.cpu())
    with pytest.raises(ValueError, match="out overlaps x"):
        op(x, w, out=x.view(-1).view(torch.float32)[:256].view(4, 64))
    with pytest.raises(ValueError, match=r"variant='mma' \(tensor cores\) needs x and weight both bfloat16 or both float16"):
        op(x.float(), w, variant="mma")
    with pytest.raises(ValueError, match="variant='mma' takes H up to 16384 with float32 weights"):
        op(torch.zeros(1, 16392, dtype=torch.bfloat16, device="cuda"),
           torch.zeros(8, 16392, device="cuda"), variant="mma")
    with pytest.raises(TypeError, match="out must have dtype float32"):
        op(x, w, out=torch.empty(4, 64, dtype=torch.bfloat16, device="cuda"))
