"""GateLinear and NormGateLinear on CPU: nn.Linear / nn.RMSNorm state_dict compatibility, LoRA
against a float64 formula, leading dims, torch.compile.

Tolerances, compared in float64: fp32 logits within a relative Frobenius error of 1e-5 of the
float64 result; bf16 outputs within one bf16 ulp of it, plus the fp32 accumulation error of the
sums (which only matters where a logit cancels to near zero).
"""

import pytest
import torch
from torch import nn

import dispatch
from cute_kernels import reference as spec
from helpers import rel_frobenius, within_one_bf16_ulp, fp32_sum_error

pytestmark = pytest.mark.filterwarnings("ignore:cute_kernels dispatch:RuntimeWarning")
BF16, FP32 = torch.bfloat16, torch.float32


@pytest.fixture(autouse=True)
def fresh_decisions():
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()





@pytest.mark.parametrize("bias", [False, True])
def test_gate_linear_state_dict_round_trip_with_nn_linear(bias, gen):
    torch.manual_seed(0)
    linear = nn.Linear(128, 16, bias=bias, dtype=BF16).requires_grad_(False)
    gate = dispatch.GateLinear(128, 16, bias=bias, params_dtype=BF16)
    assert set(gate.state_dict()) == set(linear.state_dict())
    gate.load_state_dict(linear.state_dict())
    x = torch.randn(5, 128, generator=gen).to(BF16)
    want = x.double() @ linear.weight.double().T + (linear.bias.double() if bias else 0)
    assert rel_frobenius(gate(x), want) <= 1e-5
    back = nn.Linear(128, 16, bias=bias, dtype=BF16)
    back.load_state_dict(gate.state_dict())
    assert torch.equal(back.weight, linear.weight)
    gate16 = dispatch.GateLinear(128, 16, bias=bias, out_dtype=BF16)
    gate16.load_state_dict(linear.state_dict())
    assert gate16(x).dtype == BF16 and within_one_bf16_ulp(gate16(x), want, fp32_sum_error(x, linear.weight))


def test_gate_linear_leading_dims(gen):
    gate = dispatch.GateLinear(64, 8)
    x = torch.randn(2, 3, 64, generator=gen).to(BF16)
    got = gate(x)
    assert got.shape == (2, 3, 8) and torch.equal(got, gate(x.reshape(6, 64)).view(2, 3, 8))


def lora_reference(x, gate, A, B, scaling):
    """float64: x @ W.T (+ b) + scaling * (x @ A.T) @ B.T."""
    base = x.double() @ gate.weight.double().T + (gate.bias.double() if gate.bias is not None else 0)
    return base + scaling * (x.double() @ A.double().T) @ B.double().T


def lora_slack(x, gate, A, B, scaling):
    """fp32 accumulation error of the base GEMM and of both adapter products."""
    xa_error = fp32_sum_error(x, A) @ B.double().abs().T + fp32_sum_error(x.double().abs() @ A.double().abs().T, B)
    return fp32_sum_error(x, gate.weight) + abs(scaling) * xa_error


@pytest.mark.parametrize("out_dtype", [FP32, BF16])
def test_lora_against_float64_and_update(out_dtype, gen):
    gate = dispatch.GateLinear(128, 16, bias=True, out_dtype=out_dtype)
    x = torch.randn(7, 128, generator=gen).to(BF16)
    plain = gate(x)
    A, B = torch.randn(4, 128, generator=gen).to(BF16), torch.randn(16, 4, generator=gen).to(BF16)
    gate.add_lora(A, B, 0.5)
    assert {"lora_A", "lora_B"} <= set(gate.state_dict())
    want = lora_reference(x, gate, A, B, 0.5)
    if out_dtype == FP32:
        assert rel_frobenius(gate(x), want) <= 1e-5
    else:
        assert gate(x).dtype == BF16 and within_one_bf16_ulp(gate(x), want, lora_slack(x, gate, A, B, 0.5))
    assert not torch.equal(gate(x), plain)
    A2, B2 = torch.randn(8, 128, generator=gen).to(FP32), torch.randn(16, 8, generator=gen).to(FP32)
    gate.add_lora(A2, B2, 2.0)  # replaces the adapter (rank and dtype may change)
    want2 = lora_reference(x, gate, A2, B2, 2.0)
    if out_dtype == FP32:
        assert rel_frobenius(gate(x), want2) <= 1e-5
    else:
        assert within_one_bf16_ulp(gate(x), want2, lora_slack(x, gate, A2, B2, 2.0))
    with pytest.raises(ValueError, match=r"LoRA A must be \[r, 128\] and B \[16, r\]"):
        gate.add_lora(A, B[:, :3], 1.0)


def test_lora_constructor_args_and_state_dict(gen):
    gate = dispatch.GateLinear(64, 8, lora_rank=4, lora_scaling=0.25)
    assert gate.lora_A.shape == (4, 64) and gate.lora_B.shape == (8, 4)
    x = torch.randn(3, 64, generator=gen).to(BF16)
    assert rel_frobenius(gate(x), x.double() @ gate.weight.double().T) <= 1e-5  # zero adapter
    trained = dispatch.GateLinear(64, 8)
    trained.add_lora(torch.randn(4, 64).to(BF16), torch.randn(8, 4).to(BF16), 0.25)
    gate.load_state_dict(trained.state_dict())
    assert torch.equal(gate(x), trained(x))
    assert "lora_rank=4, lora_scaling=0.25" in repr(gate)


def test_norm_gate_linear_layout_and_semantics(gen):
    norm = nn.RMSNorm(128, eps=1e-6, dtype=BF16).requires_grad_(False)
    linear = nn.Linear(128, 16, bias=False, dtype=BF16).requires_grad_(False)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    module = dispatch.NormGateLinear(128, 16, eps=1e-6)
    assert set(module.state_dict()) == {"norm.weight", "gate.weight"}
    module.load_state_dict({**{f"norm.{k}": v for k, v in norm.state_dict().items()},
                            **{f"gate.{k}": v for k, v in linear.state_dict().items()}})
    x = (torch.randn(6, 128, generator=gen) * 3).to(BF16)
    normed, logits = module(x)
    want_normed, _ = spec.norm_router_gemm(x, norm.weight, linear.weight, 1e-6)
    xd = x.double()
    n = xd / torch.sqrt(xd.square().mean(1, keepdim=True) + 1e-6) * norm.weight.double()
    assert normed.dtype == BF16 and within_one_bf16_ulp(normed, n) and within_one_bf16_ulp(want_normed, n)
    assert rel_frobenius(logits, n @ linear.weight.double().T) <= 1e-5
    normed3, logits3 = module(x.view(2, 3, 128))
    assert normed3.shape == (2, 3, 128) and logits3.shape == (2, 3, 16) and torch.equal(logits3.view(6, 16), logits)


def test_modules_compile_fullgraph(gen):
    gate, norm_gate = dispatch.GateLinear(64, 8, bias=True), dispatch.NormGateLinear(64, 8, gate_dtype=FP32)
    gate.add_lora(torch.randn(2, 64).to(BF16), torch.randn(8, 2).to(BF16), 0.5)

    def forward(x):
        normed, logits = norm_gate(x)
        return gate(normed) + logits

    torch._dynamo.reset()
    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for m in (2, 9):
            x = torch.randn(m, 64, generator=gen).to(BF16)
            assert torch.equal(compiled(x), forward(x))
