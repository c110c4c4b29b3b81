"""Every kernel variant gives bitwise-identical outputs over 100 runs on the same inputs.

Before each run the outputs are filled with one of two byte patterns, in turn, so an element some
run leaves unwritten differs between runs. The first run is also checked against the spec.
Shapes are small but take the router's split of H (H = 7168, E = 256: the tensor-core heuristic
splits it 8 ways through the global workspace; configs forced to 2, 4 and 16 ways, and across a
cluster, run too), where partial sums meet in a fixed order.
"""

import dataclasses

import pytest
import torch

import cute_kernels
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import ops
from spec_check import Maker, assert_matches_spec, snapshot

pytestmark = pytest.mark.gpu
RUNS = 100
BF16, FP16, FP32, I32, I64, FP8 = torch.bfloat16, torch.float16, torch.float32, torch.int32, torch.int64, \
    torch.float8_e4m3fn
H, E = 7168, 256


def offset(t, elems):
    """Same values at a storage offset: a narrower vector path."""
    return t.new_empty(t.numel() + elems)[elems:].view(t.shape).copy_(t)


def pack(n, t=4096, k=8, ids_dtype=I32, weights_dtype=FP32, shift=0):
    ids, w = n.randint(384, t, k, dtype=ids_dtype), n.randn(t, k, dtype=weights_dtype)
    out = n.empty(t, k, dtype=I32)
    if shift:
        ids, w, out = offset(ids, shift), offset(w, shift), offset(out, shift)
    return {"ids": ids, "weights": w, "out": out}


def silu(n, t=64, h=H, group=128, layout="row", dtype=BF16, **kw):
    g = h // group
    scales = torch.empty_strided((t, g), (g, 1) if layout == "row" else (1, t), dtype=FP32, device=n.device)
    return {"x": n.randn(t, 2 * h, dtype=dtype, scale=2.0), "group_size": group, "scale_layout": layout,
            "out": n.empty(t, h, dtype=FP8), "scales": scales, **kw}


def router(n, m, x_dtype=BF16, w_dtype=BF16, e=E, bias=None, out_dtype=FP32, **kw):
    return {"x": n.randn(m, H, dtype=x_dtype), "weight": n.randn(e, H, dtype=w_dtype, scale=0.05),
            "bias": None if bias is None else n.randn(e, dtype=bias), "out_dtype": out_dtype,
            "out": n.empty(m, e, dtype=out_dtype), **kw}


def split(m, variant, split_k, reduce="global"):
    """The heuristic's bf16 specialisation for M, with H split ``split_k`` ways instead."""
    kernel = router_tiling.pick("bfloat16", "bfloat16", "float32", None, m, H, E, variant, True)
    probe = dataclasses.replace(kernel, split_k=split_k, stages=1, reduce=reduce)
    stages = router_tiling.stages_for(probe, H)
    assert stages, "the split share must fit in shared memory"
    return dataclasses.replace(probe, stages=stages)


def norm(n, m, x_dtype=BF16, norm_dtype=BF16, gate_dtype=BF16, out_dtype=FP32):
    return {"x": n.randn(m, H, dtype=x_dtype, scale=3.0), "norm_weight": n.randn(H, dtype=norm_dtype,
                                                                                 scale=0.2).add_(1),
            "gate_weight": n.randn(E, H, dtype=gate_dtype, scale=0.05), "out_dtype": out_dtype,
            "normed_out": n.empty(m, H, dtype=x_dtype), "logits_out": n.empty(m, E, dtype=out_dtype)}


P, S, R, N = "pack_topk", "silu_mul_quant_fp8", "router_gemm", "norm_router_gemm"
VARIANTS = [
    (P, "int32 ids, fp32 weights", lambda n: pack(n)),
    (P, "int64 ids, bf16 weights, k = 6, no PDL", lambda n: {**pack(n, k=6, ids_dtype=I64, weights_dtype=BF16),
                                                              "pdl": False}),
    (P, "4-byte aligned views", lambda n: pack(n, shift=1)),
    (S, "row scales", lambda n: silu(n)),
    (S, "col scales", lambda n: silu(n, layout="col")),
    (S, "row scales, ue8m0", lambda n: silu(n, ue8m0=True)),
    (S, "col scales, ue8m0, scale_ub", lambda n: silu(n, layout="col", ue8m0=True,
                                                      scale_ub=torch.tensor([0.01], device=n.device))),
    (S, "fp16, group 64, col scales, no PDL", lambda n: silu(n, group=64, layout="col", dtype=FP16, pdl=False)),
    (R, "dot, M = 1", lambda n: router(n, 1, variant="dot")),
    (R, "dot, M = 4, split_k = 2", lambda n: router(n, 4, config=split(4, "dot", 2))),
    (R, "mma, M = 16", lambda n: router(n, 16, variant="mma")),
    (R, "mma, M = 16, split_k = 4", lambda n: router(n, 16, config=split(16, "mma", 4))),
    (R, "mma, M = 16, split_k = 4 across a cluster", lambda n: router(n, 16, config=split(16, "mma", 4, "cluster"))),
    (R, "mma, M = 64, split_k = 16", lambda n: router(n, 64, config=split(64, "mma", 16))),
    (R, "dot, bf16 bias, bf16 out", lambda n: router(n, 3, bias=BF16, out_dtype=BF16, variant="dot")),
    (R, "mma, fp32 bias, bf16 out", lambda n: router(n, 32, bias=FP32, out_dtype=BF16, variant="mma")),
    (R, "fp32 weights", lambda n: router(n, 5, w_dtype=FP32)),
    (R, "fp32 x and weights, E = 257", lambda n: router(n, 2, x_dtype=FP32, w_dtype=FP32, e=257)),
    (N, "M = 1", lambda n: norm(n, 1)),
    (N, "M = 16, fp32 gate, bf16 logits", lambda n: norm(n, 16, gate_dtype=FP32, out_dtype=BF16)),
    (N, "fp16 x, fp32 norm weight", lambda n: norm(n, 4, x_dtype=FP16, norm_dtype=FP32)),
]
OUTPUTS = {P: ("out",), S: ("out", "scales"), R: ("out",), N: ("normed_out", "logits_out")}


def raw_bytes(t):
    """The bytes of a 2-D output, dense row- or column-major."""
    return (t if t.is_contiguous() else t.t()).view(torch.uint8)


@pytest.mark.parametrize("op,what,build", VARIANTS, ids=[f"{op}-{what}" for op, what, _ in VARIANTS])
def test_bitwise_identical_over_100_runs(op, what, build, gen):
    fn = getattr(cute_kernels, op, None)
    if fn is None:
        pytest.skip(f"cute_kernels.{op} is not built in this version")
    args = build(Maker("cuda", gen))
    outs = [args[name] for name in OUTPUTS[op]]

    def run(i):
        for t in outs:
            raw_bytes(t).fill_(0xA5 if i % 2 else 0xFF)
        fn(**args)
        return [raw_bytes(t).clone() for t in outs]

    first = run(0)
    got = fn(**args)
    assert_matches_spec(op, snapshot(op, args), got)
    for i in range(1, RUNS + 1):
        again = run(i)
        assert all(torch.equal(a, b) for a, b in zip(again, first)), f"run {i} differs from the first"
