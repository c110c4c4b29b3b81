"""Bad and awkward inputs for every public op, ``cute_kernels.*`` and ``dispatch.*``, as one table.

Each row builds one call and states, per implementation and device, what must happen: the
spec's result (``spec_check``: compared in float64 with the GPU tests' tolerances) or a
TypeError / ValueError whose message names the argument. "cpu" rows run in CI: the
``cute_kernels`` ops check types, dtypes, ranks and sizes before they look at the device, and
``dispatch`` runs its torch tier on CPU tensors. "gpu" rows need CUDA tensors; "2gpu" rows put
tensors on cuda:0 and cuda:1.

A dispatch call is checked twice: before and after a valid call of the same problem has cached
its plan, so the outcome must not depend on what ran before.
"""

import math
from typing import Callable, NamedTuple

import pytest
import torch

import cute_kernels
import dispatch
from spec_check import OUT_ARGS, Maker, assert_matches_spec, snapshot

BF16, FP16, FP32, I32, I64 = torch.bfloat16, torch.float16, torch.float32, torch.int32, torch.int64
FP8 = torch.float8_e4m3fn

pytestmark = pytest.mark.filterwarnings("ignore:cute_kernels dispatch:RuntimeWarning")


# -- inputs ----------------------------------------------------------------------------------------
def pack(n, t=5, k=8, weights_dtype=FP32):
    return {"ids": n.randint(256, t, k), "weights": n.randn(t, k, dtype=weights_dtype)}


def silu(n, t=5, h=256, group=128):
    return {"x": n.randn(t, 2 * h, scale=2.0), "group_size": group}


def router(n, m=4, h=256, e=64):
    return {"x": n.randn(m, h), "weight": n.randn(e, h, scale=0.05)}


def norm(n, m=4, h=256, e=64):
    return {"x": n.randn(m, h, scale=3.0), "norm_weight": n.randn(h, scale=0.2).add_(1),
            "gate_weight": n.randn(e, h, scale=0.05)}


BASE = {"pack_topk": pack, "silu_mul_quant_fp8": silu, "router_gemm": router, "norm_router_gemm": norm}


def transposed(t):
    """Same values, column-major strides."""
    return t.t().contiguous().t()


def strided(t):
    """Same values in every other column of a wider buffer (not contiguous)."""
    wide = t.new_empty(t.shape[0], 2 * t.shape[1])
    wide[:, ::2] = t
    return wide[:, ::2]


def offset(t, elems=1):
    """Same values one element into a buffer: the data pointer loses its 16-byte alignment."""
    view = t.new_empty(t.numel() + elems)[elems:].view(t.shape)
    return view.copy_(t)


def alias(t, dtype, shape):
    """A contiguous ``dtype`` tensor over the first bytes of ``t``."""
    return t.view(-1).view(dtype)[:math.prod(shape)].view(shape)


def specials(t, *cols):
    """NaN, +inf and -inf in rows 0, 1 and 2, at the given columns."""
    t = t.clone()
    for row, (col, value) in enumerate(zip(cols, ("nan", "inf", "-inf"))):
        t[row, col] = float(value)
    return t


def huge(base, n, gib, **sizes):
    """A call over more than 2**31 - 1 elements (some kernel's 32-bit limit)."""
    n.need_gib(gib)
    return base(n, **sizes)


# -- expectations --------------------------------------------------------------------------------
class Expect(NamedTuple):
    """The spec's result, or else ``exc`` with a message naming ``name`` (a regex of argument names)."""

    spec: bool
    exc: type | None = None
    name: str | None = None


SPEC = Expect(True)


def raises(exc, name):
    return Expect(False, exc, name)


def ANY(e):
    return {"cpu": e, "gpu": e}


def GPU(e):
    return {"gpu": e}


def CPU(e):
    return {"cpu": e}


def TWO(e):
    return {"2gpu": e}


class Case(NamedTuple):
    op: str
    what: str
    build: Callable  # (base args, Maker) -> the call's keyword arguments
    cute: dict  # where ("cpu", "gpu", "2gpu") -> Expect for cute_kernels.<op>
    dispatch: dict  # where -> Expect for dispatch.<op>
    rows: int | None = None  # compare only the first and last ``rows`` rows (huge calls)


P, S, R, N = "pack_topk", "silu_mul_quant_fp8", "router_gemm", "norm_router_gemm"
CASES = [
    # -- pack_topk ----------------------------------------------------------------------------------
    Case(P, "valid call", lambda a, n: a, {"cpu": raises(ValueError, "ids"), "gpu": SPEC}, ANY(SPEC)),
    Case(P, "ids not a tensor", lambda a, n: {**a, "ids": a["ids"].tolist()},
         ANY(raises(TypeError, "ids")), ANY(raises(TypeError, "ids"))),
    Case(P, "ids float32", lambda a, n: {**a, "ids": a["ids"].float()},
         ANY(raises(TypeError, "ids")), ANY(raises(TypeError, "ids"))),
    Case(P, "weights float16", lambda a, n: {**a, "weights": a["weights"].half()},
         ANY(raises(TypeError, "weights")), ANY(raises(TypeError, "weights"))),
    Case(P, "ids 1-D", lambda a, n: {**a, "ids": a["ids"].view(-1)},
         ANY(raises(ValueError, "ids")), ANY(raises(ValueError, "ids"))),
    Case(P, "weights 3-D", lambda a, n: {**a, "weights": a["weights"][..., None]},
         ANY(raises(ValueError, "weights")), ANY(raises(ValueError, "weights"))),
    Case(P, "weights with fewer columns", lambda a, n: {**a, "weights": a["weights"][:, :7]},
         ANY(raises(ValueError, "weights")), ANY(raises(ValueError, "weights"))),
    Case(P, "weights with fewer rows", lambda a, n: {**a, "weights": a["weights"][:1]},
         ANY(raises(ValueError, "weights")), ANY(raises(ValueError, "weights"))),
    Case(P, "weights on meta", lambda a, n: {**a, "weights": a["weights"].to("meta")},
         {}, CPU(raises(ValueError, "weights"))),
    Case(P, "weights on cpu", lambda a, n: {**a, "weights": a["weights"].cpu()},
         GPU(raises(ValueError, "weights")), GPU(raises(ValueError, "weights"))),
    Case(P, "weights on cuda:1", lambda a, n: {**a, "weights": a["weights"].to("cuda:1")},
         TWO(raises(ValueError, "weights")), TWO(raises(ValueError, "weights"))),
    Case(P, "ids transposed", lambda a, n: {**a, "ids": transposed(a["ids"])},
         GPU(raises(ValueError, "ids")), ANY(SPEC)),
    Case(P, "weights every other column", lambda a, n: {**a, "weights": strided(a["weights"])},
         GPU(raises(ValueError, "weights")), ANY(SPEC)),
    Case(P, "views at a storage offset", lambda a, n: {"ids": offset(a["ids"]), "weights": offset(a["weights"], 3),
                                                       "out": offset(n.empty(5, 8, dtype=I32), 2)},
         GPU(SPEC), ANY(SPEC)),
    Case(P, "T = 0", lambda a, n: pack(n, t=0), GPU(SPEC), ANY(SPEC)),
    Case(P, "k = 13, bf16 weights", lambda a, n: pack(n, t=33, k=13, weights_dtype=BF16), GPU(SPEC), ANY(SPEC)),
    Case(P, "T * k over 2**31 - 1", lambda a, n: huge(pack, n, 48, t=2**28, k=8, weights_dtype=BF16),
         GPU(raises(ValueError, "ids")), GPU(SPEC), rows=64),
    Case(P, "NaN and inf weights", lambda a, n: {**a, "weights": specials(a["weights"], 1, 2, 3)},
         GPU(SPEC), ANY(SPEC)),
    Case(P, "out of the wrong shape", lambda a, n: {**a, "out": n.empty(5, 7, dtype=I32)},
         GPU(raises(ValueError, "out")), ANY(raises(ValueError, "out"))),
    Case(P, "out int64", lambda a, n: {**a, "out": n.empty(5, 8, dtype=I64)},
         GPU(raises(TypeError, "out")), ANY(raises(TypeError, "out"))),
    Case(P, "out on cpu", lambda a, n: {**a, "out": torch.empty(5, 8, dtype=I32)},
         GPU(raises(ValueError, "out")), GPU(raises(ValueError, "out"))),
    Case(P, "inputs on cpu, out on cuda",
         lambda a, n: {"ids": a["ids"].cpu(), "weights": a["weights"].cpu(), "out": n.empty(5, 8, dtype=I32)},
         GPU(raises(ValueError, "ids")), GPU(raises(ValueError, "out"))),
    Case(P, "out is ids", lambda a, n: {**a, "out": a["ids"]},
         GPU(raises(ValueError, "out")), {"cpu": SPEC, "gpu": raises(ValueError, "out")}),
    Case(P, "out overlaps weights", lambda a, n: {**a, "out": alias(a["weights"], I32, (5, 8))},
         GPU(raises(ValueError, "out")), {"cpu": SPEC, "gpu": raises(ValueError, "out")}),

    # -- silu_mul_quant_fp8 ------------------------------------------------------------------------
    Case(S, "valid call", lambda a, n: a, {"cpu": raises(ValueError, "x"), "gpu": SPEC}, ANY(SPEC)),
    Case(S, "x float32", lambda a, n: {**a, "x": a["x"].float()},
         ANY(raises(TypeError, "x")), ANY(raises(TypeError, "x"))),
    Case(S, "x 3-D", lambda a, n: {**a, "x": a["x"][None]}, ANY(raises(ValueError, "x")), ANY(raises(ValueError, "x"))),
    Case(S, "odd width", lambda a, n: {**a, "x": a["x"][:, :511]},
         ANY(raises(ValueError, "x")), ANY(raises(ValueError, "x"))),
    Case(S, "H not a multiple of group_size", lambda a, n: silu(n, h=192),
         ANY(raises(ValueError, "x")), ANY(raises(ValueError, "x"))),
    Case(S, "group_size 32", lambda a, n: {**a, "group_size": 32},
         ANY(raises(ValueError, "group_size")), ANY(raises(ValueError, "group_size"))),
    Case(S, "scale_layout 'column'", lambda a, n: {**a, "scale_layout": "column"},
         ANY(raises(ValueError, "scale_layout")), ANY(raises(ValueError, "scale_layout"))),
    Case(S, "scale_ub a float", lambda a, n: {**a, "scale_ub": 0.5},
         ANY(raises(TypeError, "scale_ub")), ANY(raises(TypeError, "scale_ub"))),
    Case(S, "scale_ub of two elements", lambda a, n: {**a, "scale_ub": n.randn(2, dtype=FP32).abs_()},
         ANY(raises(TypeError, "scale_ub")), ANY(raises(TypeError, "scale_ub"))),
    Case(S, "scale_ub on cpu", lambda a, n: {**a, "scale_ub": torch.tensor([0.01])},
         GPU(raises(ValueError, "scale_ub")), GPU(SPEC)),
    Case(S, "out on meta", lambda a, n: {**a, "out": torch.empty(5, 256, dtype=FP8, device="meta")},
         {}, CPU(raises(ValueError, "out"))),
    Case(S, "out on cuda:1", lambda a, n: {**a, "out": torch.empty(5, 256, dtype=FP8, device="cuda:1")},
         TWO(raises(ValueError, "out")), TWO(raises(ValueError, "out"))),
    Case(S, "x transposed", lambda a, n: {**a, "x": transposed(a["x"])}, GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(S, "x at a storage offset", lambda a, n: {**a, "x": offset(a["x"])},
         GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(S, "T = 0", lambda a, n: silu(n, t=0), GPU(SPEC), ANY(SPEC)),
    Case(S, "three groups of 64, T = 1", lambda a, n: silu(n, t=1, h=192, group=64), GPU(SPEC), ANY(SPEC)),
    Case(S, "T * 2H over 2**31 - 1", lambda a, n: huge(silu, n, 40, t=2**23, h=128),
         GPU(raises(ValueError, "x")), GPU(SPEC), rows=64),
    Case(S, "NaN and inf in gate and up", lambda a, n: {**a, "x": specials(a["x"], 3, 256 + 4, 5)},
         GPU(SPEC), ANY(SPEC)),
    Case(S, "out of the wrong shape", lambda a, n: {**a, "out": n.empty(5, 255, dtype=FP8)},
         GPU(raises(ValueError, "out")), ANY(raises(ValueError, "out"))),
    Case(S, "out bfloat16", lambda a, n: {**a, "out": n.empty(5, 256, dtype=BF16)},
         GPU(raises(TypeError, "out")), ANY(raises(TypeError, "out"))),
    Case(S, "scales float16", lambda a, n: {**a, "scales": n.empty(5, 2, dtype=FP16)},
         GPU(raises(TypeError, "scales")), ANY(raises(TypeError, "scales"))),
    Case(S, "row-major scales for scale_layout='col'",
         lambda a, n: {**a, "scale_layout": "col", "scales": n.empty(5, 2, dtype=FP32)},
         GPU(raises(ValueError, "scales")), ANY(raises(ValueError, "scales"))),
    Case(S, "out on cpu", lambda a, n: {**a, "out": torch.empty(5, 256, dtype=FP8)},
         GPU(raises(ValueError, "out")), GPU(raises(ValueError, "out"))),
    Case(S, "out overlaps x", lambda a, n: {**a, "out": alias(a["x"], FP8, (5, 256))},
         GPU(raises(ValueError, "out")), {"cpu": SPEC, "gpu": raises(ValueError, "out")}),
    Case(S, "scales overlap x", lambda a, n: {**a, "scales": alias(a["x"], FP32, (5, 2))},
         GPU(raises(ValueError, "scales")), {"cpu": SPEC, "gpu": raises(ValueError, "scales")}),

    # -- router_gemm -------------------------------------------------------------------------------
    Case(R, "valid call", lambda a, n: a, {"cpu": raises(ValueError, "x"), "gpu": SPEC}, ANY(SPEC)),
    Case(R, "x float64", lambda a, n: {**a, "x": a["x"].double()},
         ANY(raises(TypeError, "x")), ANY(raises(TypeError, "x"))),
    Case(R, "weight int32", lambda a, n: {**a, "weight": a["weight"].int()},
         ANY(raises(TypeError, "weight")), ANY(raises(TypeError, "weight"))),
    Case(R, "x 1-D", lambda a, n: {**a, "x": a["x"][0]}, ANY(raises(ValueError, "x")), ANY(raises(ValueError, "x"))),
    Case(R, "weight of another H", lambda a, n: {**a, "weight": n.randn(64, 248)},
         ANY(raises(ValueError, "weight")), ANY(raises(ValueError, "weight"))),
    Case(R, "out_dtype float16", lambda a, n: {**a, "out_dtype": FP16},
         ANY(raises(TypeError, "out_dtype")), ANY(raises(TypeError, "out_dtype"))),
    Case(R, "H = 60, not a multiple of 8", lambda a, n: router(n, h=60), ANY(raises(ValueError, "x")), ANY(SPEC)),
    Case(R, "E = 0", lambda a, n: router(n, e=0), ANY(raises(ValueError, "weight")), ANY(SPEC)),
    Case(R, "bias of the wrong length", lambda a, n: {**a, "bias": n.randn(63, dtype=FP32)},
         GPU(raises(ValueError, "bias")), ANY(raises(ValueError, "bias"))),
    Case(R, "bias int32", lambda a, n: {**a, "bias": n.randint(9, 64)},
         GPU(raises(TypeError, "bias")), ANY(raises(TypeError, "bias"))),
    Case(R, "weight on meta", lambda a, n: {**a, "weight": a["weight"].to("meta")},
         {}, CPU(raises(ValueError, "weight"))),
    Case(R, "weight on cpu", lambda a, n: {**a, "weight": a["weight"].cpu()},
         GPU(raises(ValueError, "weight")), GPU(raises(ValueError, "weight"))),
    Case(R, "x on cpu, weight on cuda", lambda a, n: {**a, "x": a["x"].cpu()},
         GPU(raises(ValueError, "x")), GPU(raises(ValueError, "x|weight"))),
    Case(R, "weight on cuda:1", lambda a, n: {**a, "weight": a["weight"].to("cuda:1")},
         TWO(raises(ValueError, "weight")), TWO(raises(ValueError, "weight"))),
    Case(R, "weight transposed", lambda a, n: {**a, "weight": transposed(a["weight"])},
         GPU(raises(ValueError, "weight")), ANY(SPEC)),
    Case(R, "x every other column", lambda a, n: {**a, "x": strided(a["x"])}, GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(R, "x at a storage offset", lambda a, n: {**a, "x": offset(a["x"])}, GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(R, "M = 0", lambda a, n: router(n, m=0), GPU(SPEC), ANY(SPEC)),
    Case(R, "E = 257 at H = 7168 (cluster split)", lambda a, n: router(n, m=3, h=7168, e=257), GPU(SPEC), ANY(SPEC)),
    Case(R, "E = 1", lambda a, n: router(n, m=5, h=64, e=1), GPU(SPEC), ANY(SPEC)),
    Case(R, "E = 37, bias, bf16 out", lambda a, n: {**router(n, m=9, e=37), "bias": n.randn(37, dtype=FP32),
                                                    "out_dtype": BF16}, GPU(SPEC), ANY(SPEC)),
    Case(R, "M * H over 2**31 - 1", lambda a, n: huge(router, n, 24, m=2**28, h=8, e=8),
         GPU(raises(ValueError, "x")), GPU(SPEC), rows=64),
    Case(R, "NaN and inf in x", lambda a, n: {**a, "x": specials(a["x"], 5, 7, 9)}, GPU(SPEC), ANY(SPEC)),
    Case(R, "out of the wrong shape", lambda a, n: {**a, "out": n.empty(4, 63, dtype=FP32)},
         GPU(raises(ValueError, "out")), ANY(raises(ValueError, "out"))),
    Case(R, "out bfloat16 for out_dtype float32", lambda a, n: {**a, "out": n.empty(4, 64, dtype=BF16)},
         GPU(raises(TypeError, "out")), ANY(raises(TypeError, "out"))),
    Case(R, "out on meta", lambda a, n: {**a, "out": torch.empty(4, 64, device="meta")},
         {}, CPU(raises(ValueError, "out"))),
    Case(R, "out on cpu", lambda a, n: {**a, "out": torch.empty(4, 64)},
         GPU(raises(ValueError, "out")), GPU(raises(ValueError, "out"))),
    Case(R, "out overlaps x", lambda a, n: {**a, "out": alias(a["x"], FP32, (4, 64))},
         GPU(raises(ValueError, "out")), {"cpu": SPEC, "gpu": raises(ValueError, "out")}),

    # -- norm_router_gemm ----------------------------------------------------------------------------
    Case(N, "valid call", lambda a, n: a, {"cpu": raises(ValueError, "x"), "gpu": SPEC}, ANY(SPEC)),
    Case(N, "x float32", lambda a, n: {**a, "x": a["x"].float()},
         ANY(raises(TypeError, "x")), ANY(raises(TypeError, "x"))),
    Case(N, "gate_weight float16", lambda a, n: {**a, "gate_weight": a["gate_weight"].half()},
         ANY(raises(TypeError, "gate_weight")), {}),  # dispatch takes fp16 gates; the spec does not
    Case(N, "x 1-D", lambda a, n: {**a, "x": a["x"][0]}, ANY(raises(ValueError, "x")), ANY(raises(ValueError, "x"))),
    Case(N, "norm_weight of another length", lambda a, n: {**a, "norm_weight": a["norm_weight"][:248]},
         ANY(raises(ValueError, "norm_weight")), ANY(raises(ValueError, "norm_weight"))),
    Case(N, "norm_weight of length 1", lambda a, n: {**a, "norm_weight": a["norm_weight"][:1]},
         ANY(raises(ValueError, "norm_weight")), ANY(raises(ValueError, "norm_weight"))),
    Case(N, "gate_weight of another H", lambda a, n: {**a, "gate_weight": n.randn(64, 248)},
         ANY(raises(ValueError, "gate_weight")), ANY(raises(ValueError, "gate_weight"))),
    Case(N, "eps < 0", lambda a, n: {**a, "eps": -1.0},
         ANY(raises(ValueError, "eps")), ANY(raises(ValueError, "eps"))),
    Case(N, "out_dtype float16", lambda a, n: {**a, "out_dtype": FP16},
         ANY(raises(TypeError, "out_dtype")), ANY(raises(TypeError, "out_dtype"))),
    Case(N, "H = 60, not a multiple of 8", lambda a, n: norm(n, h=60), ANY(raises(ValueError, "x")), ANY(SPEC)),
    Case(N, "norm_weight float32", lambda a, n: {**a, "norm_weight": a["norm_weight"].float()},
         GPU(SPEC), ANY(SPEC)),
    Case(N, "gate_weight on meta", lambda a, n: {**a, "gate_weight": a["gate_weight"].to("meta")},
         {}, CPU(raises(ValueError, "gate_weight"))),
    Case(N, "gate_weight on cpu", lambda a, n: {**a, "gate_weight": a["gate_weight"].cpu()},
         GPU(raises(ValueError, "gate_weight")), GPU(raises(ValueError, "gate_weight"))),
    Case(N, "gate_weight on cuda:1", lambda a, n: {**a, "gate_weight": a["gate_weight"].to("cuda:1")},
         TWO(raises(ValueError, "gate_weight")), TWO(raises(ValueError, "gate_weight"))),
    Case(N, "x transposed", lambda a, n: {**a, "x": transposed(a["x"])}, GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(N, "x at a storage offset", lambda a, n: {**a, "x": offset(a["x"])}, GPU(raises(ValueError, "x")), ANY(SPEC)),
    Case(N, "M = 0", lambda a, n: norm(n, m=0), GPU(SPEC), ANY(SPEC)),
    Case(N, "E = 257 at H = 7168 (cluster split)", lambda a, n: norm(n, m=3, h=7168, e=257), GPU(SPEC), ANY(SPEC)),
    Case(N, "E = 1, fp32 gate, bf16 logits", lambda a, n: {**norm(n, m=5, h=64, e=1), "out_dtype": BF16,
                                                          "gate_weight": n.randn(1, 64, dtype=FP32)},
         GPU(SPEC), ANY(SPEC)),
    Case(N, "M * H over 2**31 - 1", lambda a, n: huge(norm, n, 56, m=2**28, h=8, e=8),
         GPU(raises(ValueError, "x")), GPU(SPEC), rows=64),
    Case(N, "NaN and inf in x", lambda a, n: {**a, "x": specials(a["x"], 5, 7, 9)}, GPU(SPEC), ANY(SPEC)),
    Case(N, "normed_out of the wrong shape", lambda a, n: {**a, "normed_out": n.empty(4, 255, dtype=BF16)},
         GPU(raises(ValueError, "normed_out")), ANY(raises(ValueError, "normed_out"))),
    Case(N, "logits_out bfloat16 for out_dtype float32", lambda a, n: {**a, "logits_out": n.empty(4, 64, dtype=BF16)},
         GPU(raises(TypeError, "logits_out")), ANY(raises(TypeError, "logits_out"))),
    Case(N, "logits_out of the wrong shape, float64 norm_weight",
         lambda a, n: {**a, "norm_weight": a["norm_weight"].double(), "logits_out": n.empty(4, 63, dtype=FP32)},
         ANY(raises(TypeError, "norm_weight")), ANY(raises(ValueError, "logits_out"))),
    Case(N, "logits_out on cpu", lambda a, n: {**a, "logits_out": torch.empty(4, 64)},
         GPU(raises(ValueError, "logits_out")), GPU(raises(ValueError, "logits_out"))),
    Case(N, "normed_out is x", lambda a, n: {**a, "normed_out": a["x"]},
         GPU(raises(ValueError, "normed_out")), {"cpu": SPEC, "gpu": raises(ValueError, "normed_out")}),
    Case(N, "logits_out overlaps gate_weight", lambda a, n: {**a, "logits_out": alias(a["gate_weight"], FP32, (4, 64))},
         GPU(raises(ValueError, "logits_out")), {"cpu": SPEC, "gpu": raises(ValueError, "logits_out")}),
]


# -- running a case ------------------------------------------------------------------------------
def op_of(impl, name):
    return getattr(dispatch if impl == "dispatch" else cute_kernels, name)


def check(case, impl, where, expect, gen):
    n = Maker("cpu" if where == "cpu" else "cuda:0", gen)
    args = case.build(BASE[case.op](n), n)
    fn = op_of(impl, case.op)
    if not expect.spec:
        with pytest.raises(expect.exc, match=rf"\b({expect.name})\b"):
            fn(**args)
        return
    before = snapshot(case.op, args, case.rows)
    got = fn(**args)
    for name, index in OUT_ARGS[case.op].items():
        if name in args:  # a given output is filled in and returned
            assert (got if index is None else got[index]) is args[name], f"{name} was not returned"
    assert_matches_spec(case.op, before, got, case.rows)


def params():
    for case in CASES:
        for impl, expects in (("cute", case.cute), ("dispatch", case.dispatch)):
            for where, expect in expects.items():
                marks = [] if where == "cpu" else [pytest.mark.gpu]
                if where == "2gpu":
                    marks.append(pytest.mark.skipif(torch.cuda.device_count() < 2,
                                                    reason="needs two GPUs (tensors on cuda:0 and cuda:1)"))
                yield pytest.param(case, impl, where, expect, marks=marks, id=f"{where}-{impl}.{case.op}-{case.what}")


@pytest.mark.parametrize("case,impl,where,expect", params())
def test_bad_input(case, impl, where, expect, gen):
    if impl == "cute":
        check(case, impl, where, expect, gen)
        return
    dispatch.clear_cache()
    check(case, impl, where, expect, gen)  # no plan cached for this problem yet
    n = Maker("cpu" if where == "cpu" else "cuda:0", gen)
    dispatch_op = op_of(impl, case.op)
    dispatch_op(**BASE[case.op](n))  # caches the plan of the base problem, which most rows share
    check(case, impl, where, expect, gen)  # the same call again, now maybe on that cached plan
