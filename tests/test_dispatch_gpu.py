"""The dispatcher on an sm_90+ GPU: every tier against float64 / the spec, the default choices,
torch.compile, CUDA-graph capture after ``dispatch.warmup``, and capture without it.

Tolerances, compared in float64:
- router fp32 logits: relative Frobenius error <= 1e-5 against the float64 product (fp32
  accumulation over H terms; TF32 would be ~1e-3, so this also proves fp32 weights stay fp32);
- bf16 outputs (logits, normed_x): within one bf16 ulp of the float64 value; logits also get the
  fp32 accumulation error of their sum (``fp32_sum_error``), which only matters where the sum
  cancels to far below its terms;
- silu_mul_quant_fp8: scales relative error <= 1e-6 and q within one e4m3 step of the spec's
  (as tests/test_silu_mul_quant_gpu.py argues); the torch tier bit-exact;
- pack_topk: bit-exact.
"""


import pytest
import torch

import cute_kernels
import dispatch
from dispatch import tuning
from cute_kernels import reference as spec
from helpers import rel_frobenius, within_one_bf16_ulp, fp32_sum_error

pytestmark = pytest.mark.gpu
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32

ROUTER_TIER_DTYPES = {
    "cute-mma": [(BF16, BF16), (FP16, FP16)],
    "cute-dot": [(BF16, BF16), (FP16, BF16), (FP32, BF16), (BF16, FP32), (FP32, FP32)],
    "cublas": [(BF16, BF16), (FP16, FP16)],
    "torch": [(BF16, BF16), (FP16, FP16), (BF16, FP32), (FP32, FP32)],
}


@pytest.fixture(autouse=True)
def fresh_decisions():
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()


def cuda_gen(gen):
    return torch.Generator("cuda").manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))


def randn(shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, device="cuda", generator=cuda_gen(gen)) * scale).to(dtype)





def needs(name):
    if getattr(cute_kernels, name, None) is None:
        pytest.skip(f"cute_kernels.{name} is not built in this version")


@pytest.mark.parametrize("tier,xd,wd", [(t, x, w) for t, pairs in ROUTER_TIER_DTYPES.items() for x, w in pairs])
@pytest.mark.parametrize("m", [1, 7, 64, 300])
@pytest.mark.parametrize("with_bias", [False, True])
def test_router_tier_against_float64(tier, xd, wd, m, with_bias, gen):
    if tier.startswith("cute"):
        needs("router_gemm")
    x, w = randn((m, 7168), xd, gen), randn((256, 7168), wd, gen, 0.05)
    bias = randn((256,), FP32, gen) if with_bias else None
    exact = x.double() @ w.double().T + (bias.double() if with_bias else 0)
    with dispatch.force_tier("router_gemm", tier):
        got = dispatch.router_gemm(x, w, bias)
        got16 = dispatch.router_gemm(x, w, bias, out_dtype=BF16)
        out = torch.full((m, 256), float("nan"), device="cuda")
        assert dispatch.router_gemm(x, w, bias, out=out) is out
    assert got.dtype == FP32 and rel_frobenius(got, exact) <= 1e-5
    assert rel_frobenius(out, exact) <= 1e-5
    assert got16.dtype == BF16 and within_one_bf16_ulp(got16, exact, fp32_sum_error(x, w))


def test_fp32_weights_never_use_tf32(gen):
    x, w = randn((64, 3072), FP32, gen), randn((256, 3072), FP32, gen)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with dispatch.force_tier("router_gemm", "torch"):
            got = dispatch.router_gemm(x, w)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert rel_frobenius(got, x.double() @ w.double().T) <= 1e-5


@pytest.mark.parametrize("tier", ["cute-fused", "unfused", "torch"])
@pytest.mark.parametrize("gate_dtype", [BF16, FP32])
@pytest.mark.parametrize("m", [1, 9, 100])
def test_norm_router_tier_against_float64(tier, gate_dtype, m, gen):
    if tier == "cute-fused":
        needs("norm_router_gemm")
    if tier == "unfused":
        needs("router_gemm")
    x, norm_w = randn((m, 4096), BF16, gen, 3.0), randn((4096,), BF16, gen)
    gate = randn((256, 4096), gate_dtype, gen, 0.05)
    xd = x.double()
    n = xd / torch.sqrt(xd.square().mean(1, keepdim=True) + 1e-6) * norm_w.double()
    with dispatch.force_tier("norm_router_gemm", tier):
        normed, logits = dispatch.norm_router_gemm(x, norm_w, gate)
        _, logits16 = dispatch.norm_router_gemm(x, norm_w, gate, out_dtype=BF16)
    assert normed.dtype == BF16 and within_one_bf16_ulp(normed, n)
    assert rel_frobenius(logits, n @ gate.double().T) <= 1e-5
    assert within_one_bf16_ulp(logits16, n @ gate.double().T, fp32_sum_error(n, gate))


def e4m3_step(v):
    return torch.exp2(torch.floor(torch.log2(v.clamp_min(2.0**-6))) - 3)


@pytest.mark.parametrize("tier", ["cute", "torch"])
@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("t", [1, 16, 1000])
def test_silu_quant_tier_against_spec(tier, layout, t, gen):
    x = randn((t, 4096), BF16, gen, 2.0)
    with dispatch.force_tier("silu_mul_quant_fp8", tier):
        q, s = dispatch.silu_mul_quant_fp8(x, 128, scale_layout=layout)
    want_q, want_s = spec.silu_mul_quant_fp8(x, 128, scale_layout=layout)
    assert s.stride() == want_s.stride() or t == 1
    if tier == "torch":
        assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8)) and torch.equal(s, want_s)
        return
    assert float(((s.double() - want_s.double()).abs() / want_s.double()).max()) <= 1e-6
    got, want = q.double(), want_q.double()
    assert bool(((got - want).abs() <= e4m3_step(torch.maximum(got.abs(), want.abs()))).all())


@pytest.mark.parametrize("tier", ["cute", "torch"])
@pytest.mark.parametrize("ids_dtype,weights_dtype", [(torch.int32, FP32), (torch.int64, BF16)])
def test_pack_topk_tier_against_spec(tier, ids_dtype, weights_dtype, gen):
    ids = torch.randint(0, 384, (333, 8), device="cuda", dtype=ids_dtype, generator=cuda_gen(gen))
    w = torch.rand(333, 8, device="cuda", generator=cuda_gen(gen)).to(weights_dtype)
    with dispatch.force_tier("pack_topk", tier):
        assert torch.equal(dispatch.pack_topk(ids, w), spec.pack_topk(ids, w))


def test_default_choices_on_this_gpu():
    arch = dispatch.device_arch(torch.device("cuda", torch.cuda.current_device()))
    x1 = torch.zeros(1, 7168, dtype=BF16, device="cuda")
    w = torch.zeros(256, 7168, dtype=BF16, device="cuda")
    if getattr(cute_kernels, "router_gemm", None) is not None:
        # Every tier's window of the shipped table, at its first and last M (capped at 256).
        windows, _ = tuning.windows("router_gemm", arch, ("bfloat16", "bfloat16"), (7168, 256))
        for tier, window in windows.items():
            for m in {max(window[0], 1), min(window[1], 256)} if window else ():
                x = torch.zeros(m, 7168, dtype=BF16, device="cuda")
                assert dispatch.explain("router_gemm", x, w).tier == tier, str(dispatch.explain("router_gemm", x, w))
    else:
        assert dispatch.explain("router_gemm", x1, w).tier == "cublas"
    assert dispatch.explain("silu_mul_quant_fp8", torch.zeros(4, 4096, dtype=BF16, device="cuda")).tier == "cute"
    ids = torch.zeros(4, 8, dtype=torch.int64, device="cuda")
    assert dispatch.explain("pack_topk", ids, torch.zeros(4, 8, device="cuda")).tier == "cute", arch


def gate_step(x, w, ids, weights, xs):
    logits = dispatch.router_gemm(x, w)
    q, s = dispatch.silu_mul_quant_fp8(xs, 128, scale_layout="col")
    return logits, q.view(torch.uint8), s, dispatch.pack_topk(ids, weights)


def test_compile_fullgraph_on_gpu(gen):
    torch._dynamo.reset()
    compiled = torch.compile(gate_step, fullgraph=True, dynamic=True)
    w = randn((256, 7168), BF16, gen, 0.05)
    for m in (1, 16, 200):
        args = (randn((m, 7168), BF16, gen), w,
                torch.randint(0, 256, (m, 8), device="cuda", generator=cuda_gen(gen)),
                torch.rand(m, 8, device="cuda", generator=cuda_gen(gen)), randn((m, 4096), BF16, gen))
        for got, want in zip(compiled(*args), gate_step(*args)):
            assert got.shape == want.shape and got.stride() == want.stride() and torch.equal(got, want)


class ToyGateStack(torch.nn.Module):
    """Two MoE layers' routing: GateLinear -> softmax top-k -> pack_topk."""

    def __init__(self, hidden, experts, k):
        super().__init__()
        self.k = k
        self.gates = torch.nn.ModuleList(dispatch.GateLinear(hidden, experts, device="cuda") for _ in range(2))

    def forward(self, hidden_states):
        packed = []
        for gate, h in zip(self.gates, hidden_states):
            weights, ids = torch.topk(gate(h).softmax(-1), self.k)
            packed.append(dispatch.pack_topk(ids, weights))
        return packed


def test_cuda_graph_of_a_gate_stack_after_warmup(gen):
    preset = cute_kernels.presets.get("qwen3-30b-a3b")  # hidden 2048, 128 experts, top-8
    model = ToyGateStack(preset.hidden_size, preset.num_experts, preset.top_k)
    summary = dispatch.warmup([preset], m_values=[16])
    assert summary.calls and "qwen3-30b-a3b" in str(summary)
    static = [randn((16, preset.hidden_size), BF16, gen) for _ in range(2)]
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        captured = model(static)
    for _ in range(3):
        fresh = [randn((16, preset.hidden_size), BF16, gen) for _ in range(2)]
        for s, f in zip(static, fresh):
            s.copy_(f)
        g.replay()
        torch.cuda.synchronize()
        for got, want in zip(captured, model(fresh)):
            assert torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:The CUDA Graph is empty")
def test_capture_without_warmup_is_a_clear_error(cache_dir, gen):
    cute_kernels.compile.default_cache().clear_memory()  # nothing loaded in this process
    ids = torch.randint(0, 64, (8, 11), device="cuda", generator=cuda_gen(gen))  # k = 11: a new specialisation
    w = torch.rand(8, 11, device="cuda", generator=cuda_gen(gen)).to(BF16)
    g = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="not loaded yet and a CUDA graph is being captured"):
        with torch.cuda.graph(g):
            dispatch.pack_topk(ids, w)
