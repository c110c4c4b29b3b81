"""norm_router_gemm on the GPU against the float64 spec (``reference.norm_router_gemm``).

Tolerances (against the float64 result on the same inputs, computed here without rounding):
- normed_x: within one ulp of its dtype. The kernel computes x * r * norm_weight in fp32
  (relative error ~2**-22 before the final rounding), so the result is the correctly rounded
  value or its neighbour when the exact value sits next to a rounding boundary.
- fp32 logits: relative Frobenius error <= 1e-5. fp32 accumulation of H <= 16384 terms is
  ~1e-7 relative for these inputs; a lost or doubled k tile, or a wrong 1/rms, is >= 1e-3.
- bf16 logits: one bf16 ulp plus the fp32 accumulation bound (``fp32_sum_error``).
The logits are compared with the product of the *unrounded* normed rows, as the spec defines.
"""

import random

import pytest
import torch

import cute_kernels
from cute_kernels import presets
from helpers import fp32_sum_error, rel_frobenius, run_on_busy_stream, within_one_ulp

pytestmark = pytest.mark.gpu
M_VALUES = [0, 1, 2, 3, 7, 16, 33, 64]
NORM_PRESETS = [p for p in presets.PRESETS.values() if p.norm_router] + [
    presets.get(n) for n in ("deepseek-v3", "kimi-k3", "gpt-oss-20b", "minimax-m2", "qwen3-next", "mixtral-8x7b")]
_rng = random.Random(4242)
RANDOM_SHAPES = [(8 * _rng.randint(8, 2048), _rng.randint(1, 1024)) for _ in range(10)] + [(8, 1), (16384, 1024)]


def make(m, h, e, gen, x_dtype=torch.bfloat16, norm_dtype=None, gate_dtype=torch.bfloat16):
    x = (torch.randn(m, h, generator=gen) * 3).to(x_dtype).cuda()
    nw = (1 + 0.2 * torch.randn(h, generator=gen)).to(norm_dtype or x_dtype).cuda()
    gate = (torch.randn(e, h, generator=gen) * 0.05).to(gate_dtype).cuda()
    return x, nw, gate


def exact(x, nw, gate, eps):
    xd = x.double()
    n = xd * torch.rsqrt(xd.square().mean(dim=1, keepdim=True) + eps) * nw.double()
    return n, n @ gate.double().T


def check(normed, logits, x, nw, gate, eps=1e-6):
    n, want = exact(x, nw, gate, eps)
    assert not torch.isnan(normed).any() and not torch.isnan(logits).any(), "an output element was never written"
    assert normed.dtype == x.dtype and within_one_ulp(normed, n, x.dtype), "normed_x beyond one ulp"
    if logits.dtype == torch.float32:
        err = rel_frobenius(logits, want) if logits.numel() else 0.0
        assert err <= 1e-5, f"logits relative Frobenius error {err:.3g}"
    else:
        assert within_one_ulp(logits, want, torch.bfloat16, fp32_sum_error(n, gate)), "bf16 logits beyond one ulp"


def run(x, nw, gate, eps=1e-6, out_dtype=torch.float32, **kw):
    m, h = x.shape
    normed = torch.full((m, h), float("nan"), dtype=x.dtype, device="cuda")
    logits = torch.full((m, gate.shape[0]), float("nan"), dtype=out_dtype, device="cuda")
    got = cute_kernels.norm_router_gemm(x, nw, gate, eps, out_dtype=out_dtype, normed_out=normed,
                                        logits_out=logits, **kw)
    torch.cuda.synchronize()
    assert got[0] is normed and got[1] is logits
    check(normed, logits, x, nw, gate, eps)
    return normed, logits


@pytest.mark.parametrize("preset", NORM_PRESETS, ids=lambda p: p.name)
@pytest.mark.parametrize("m", M_VALUES)
def test_presets(preset, m, gen):
    gate_dtype = torch.float32 if preset.gate_dtype == "float32" else torch.bfloat16
    run(*make(m, preset.hidden_size, preset.num_experts, gen, gate_dtype=gate_dtype))


@pytest.mark.parametrize("h,e", RANDOM_SHAPES)
@pytest.mark.parametrize("m", [1, 5, 33])
def test_random_shapes(h, e, m, gen):
    run(*make(m, h, e, gen))


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm_dtype", [None, torch.float32])  # None: x's dtype
@pytest.mark.parametrize("gate_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_dtype_combinations(x_dtype, norm_dtype, gate_dtype, out_dtype, gen):
    run(*make(9, 4096, 256, gen, x_dtype, norm_dtype, gate_dtype), out_dtype=out_dtype)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_eps_is_a_runtime_argument(eps, gen):
    x, nw, gate = make(3, 7168, 384, gen)
    x[1] = 0  # an all-zero row: r = 1 / sqrt(eps) (inf at eps = 0, then 0 * inf = NaN as in the spec)
    if eps == 0.0:
        normed, logits = cute_kernels.norm_router_gemm(x, nw, gate, eps)
        torch.cuda.synchronize()
        assert torch.isnan(normed[1]).all() and torch.isnan(logits[1]).all()
        check(normed[::2], logits[::2], x[::2], nw, gate, eps)
    else:
        run(x, nw, gate, eps)


@pytest.mark.parametrize("pdl", [True, False])
def test_no_pdl(pdl, gen):
    run(*make(16, 7168, 384, gen), pdl=pdl)


def test_allocates_outputs(gen):
    x, nw, gate = make(4, 7168, 384, gen)
    normed, logits = cute_kernels.norm_router_gemm(x, nw, gate, out_dtype=torch.bfloat16)
    assert normed.shape == x.shape and logits.shape == (4, 384) and logits.dtype == torch.bfloat16
    check(normed, logits, x, nw, gate)


def test_non_default_stream_orders_after_producer(gen):
    x, nw, gate = make(16, 7168, 384, gen)
    normed, logits = run_on_busy_stream(cute_kernels.norm_router_gemm, x, nw, gate)
    check(normed, logits, x, nw, gate)


@pytest.mark.parametrize("m", [1, 16])
def test_cuda_graph_replay_with_new_inputs(m, gen):
    x, nw, gate = make(m, 7168, 384, gen)
    normed, logits = torch.empty_like(x), torch.empty(m, 384, device="cuda")
    cute_kernels.norm_router_gemm(x, nw, gate, normed_out=normed, logits_out=logits)  # loads outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cute_kernels.norm_router_gemm(x, nw, gate, normed_out=normed, logits_out=logits)
    for _ in range(3):
        new = make(m, 7168, 384, gen)
        for dst, src in zip((x, nw, gate), new):
            dst.copy_(src)
        normed.fill_(float("nan"))
        logits.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        check(normed, logits, x, nw, gate)


def test_deterministic(gen):
    x, nw, gate = make(5, 7168, 384, gen)
    first = cute_kernels.norm_router_gemm(x, nw, gate)
    for _ in range(100):
        again = cute_kernels.norm_router_gemm(x, nw, gate)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_nan_and_inf_propagate(gen):
    x, nw, gate = make(3, 1024, 64, gen)
    x[0, 5] = float("nan")
    x[1, 7] = float("inf")
    normed, logits = cute_kernels.norm_router_gemm(x, nw, gate)
    want_n, want_l = cute_kernels.reference.norm_router_gemm(x, nw, gate)
    torch.cuda.synchronize()
    assert torch.equal(torch.isnan(normed), torch.isnan(want_n)) and torch.equal(torch.isnan(logits), torch.isnan(want_l))
    check(normed[2:], logits[2:], x[2:], nw, gate)


def test_rejects_what_it_cannot_do(gen):
    x, nw, gate = make(4, 1024, 64, gen)
    op = cute_kernels.norm_router_gemm
    with pytest.raises(ValueError, match="norm_weight must have size 1024 in dim 0"):
        op(x, nw[:512], gate)
    with pytest.raises(TypeError, match="gate_weight must have dtype"):
        op(x, nw, gate.half())
    with pytest.raises(ValueError, match="x must be 16-byte aligned"):
        op(torch.empty(4 * 1024 + 1, dtype=torch.bfloat16, device="cuda")[1:].view(4, 1024), nw, gate)
    with pytest.raises(ValueError, match="normed_out overlaps x"):
        op(x, nw, gate, normed_out=x)
    with pytest.raises(ValueError, match="eps must be a float >= 0"):
        op(x, nw, gate, -1.0)
