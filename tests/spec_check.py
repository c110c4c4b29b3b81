"""Random inputs for the ops, and an op's result against the spec (``cute_kernels.reference``),
for any op and device.

Tolerances, compared in float64 (as the GPU tests state and argue them):
- pack_topk: bit-exact.
- silu_mul_quant_fp8: ``test_silu_mul_quant_gpu.assert_matches`` (scales within 1e-6 relative,
  ue8m0 scales exact, dequantised values within one e4m3 step, NaN exactly where the spec's are).
- router_gemm / norm_router_gemm logits: fp32 within a relative Frobenius error of 1e-5, bf16
  within one bf16 ulp plus the fp32 accumulation bound (``fp32_sum_error``); normed_x within one
  bf16 ulp. NaN and +-inf must sit exactly where the spec's are; the tolerance covers the rest.
"""

import pytest
import torch

from cute_kernels import reference as spec
from helpers import fp32_sum_error, rel_frobenius, within_one_bf16_ulp
from test_silu_mul_quant_gpu import assert_matches as assert_silu_matches


class Maker:
    """Random tensors on one device from the test's seeded generator (drawn on that device)."""

    def __init__(self, device, gen):
        self.device = torch.device(device)
        self.gen = gen if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=gen)))

    def randn(self, *shape, dtype=torch.bfloat16, scale=1.0):
        return torch.randn(*shape, dtype=dtype, device=self.device, generator=self.gen).mul_(scale)

    def randint(self, high, *shape, dtype=torch.int32):
        return torch.randint(0, high, shape, dtype=dtype, device=self.device, generator=self.gen)

    def empty(self, *shape, dtype):
        return torch.empty(*shape, dtype=dtype, device=self.device)

    def need_gib(self, gib):
        torch.cuda.empty_cache()  # blocks a previous huge call left cached count as used
        if torch.cuda.mem_get_info(self.device)[0] < gib * 2**30:
            pytest.skip(f"needs {gib} GiB of free GPU memory")


# The arguments whose rows are the op's rows (the token dimension).
ROW_ARGS = {"pack_topk": ("ids", "weights"), "silu_mul_quant_fp8": ("x",), "router_gemm": ("x",),
            "norm_router_gemm": ("x",)}
# Output arguments and where each comes back in the result (None: the result itself).
OUT_ARGS = {"pack_topk": {"out": None}, "silu_mul_quant_fp8": {"out": 0, "scales": 1},
            "router_gemm": {"out": None}, "norm_router_gemm": {"normed_out": 0, "logits_out": 1}}


def sample(t, rows):
    """The first and last ``rows`` rows (all of them when None): rows are independent."""
    if rows is None:
        return t
    if t.dtype == torch.float8_e4m3fn:  # concatenated as bytes: not every build concatenates fp8
        return sample(t.view(torch.uint8), rows).view(t.dtype)
    return torch.cat([t[:rows], t[-rows:]])


def snapshot(op, args, rows=None):
    """The inputs as they are before the call (an output may alias one), restricted to ``rows``."""
    return {k: (sample(v, rows) if k in ROW_ARGS[op] else v).clone() if isinstance(v, torch.Tensor) else v
            for k, v in args.items() if k not in OUT_ARGS[op]}


def assert_special_values_match(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    assert torch.equal(got.isnan(), want.isnan()), "NaN where the spec has none, or the reverse"
    inf = want.isinf()
    assert torch.equal(got.isinf(), inf) and torch.equal(got[inf], want[inf]), "+-inf differ from the spec"
    return ~(inf | want.isnan())


def assert_logits_match(got, want, a, b):
    finite = assert_special_values_match(got, want)
    if got.dtype == torch.float32:
        err = rel_frobenius(got[finite], want[finite])
        assert err <= 1e-5, f"relative Frobenius error {err:.3g}"
    else:
        slack = fp32_sum_error(a, b)[finite]
        assert within_one_bf16_ulp(got[finite], want[finite], slack), "bf16 logits beyond one ulp"


def assert_matches_spec(op, a, got, rows=None):
    """``got`` (the op's result, all rows) against the spec on ``a`` (a ``snapshot``)."""
    if isinstance(got, tuple):
        got = tuple(sample(t, rows) for t in got)
    else:
        got = sample(got, rows)
    if op == "pack_topk":
        want = spec.pack_topk(a["ids"], a["weights"])
        assert got.dtype == torch.int32 and torch.equal(got, want), f"{int((got != want).sum())} elements differ"
    elif op == "silu_mul_quant_fp8":
        assert_silu_matches(a["x"], *got, a.get("group_size", 128), a.get("ue8m0", False), a.get("scale_ub"),
                            a.get("scale_layout", "row"))
    elif op == "router_gemm":
        want = spec.router_gemm(a["x"], a["weight"], a.get("bias"), a.get("out_dtype", torch.float32))
        assert_logits_match(got, want, a["x"], a["weight"])
    else:
        normed, logits = spec.norm_router_gemm(a["x"], a["norm_weight"], a["gate_weight"], a.get("eps", 1e-6),
                                                  a.get("out_dtype", torch.float32))
        finite = assert_special_values_match(got[0], normed)
        assert within_one_bf16_ulp(got[0][finite], normed[finite]), "normed_x beyond one ulp"
        assert_logits_match(got[1], logits, normed, a["gate_weight"])
