"""Shared test helpers: a busy non-default stream, and the tolerances the tests state."""

import torch


def run_on_busy_stream(op, *inputs):
    """Runs ``op(*copies)`` on a non-default stream right after that stream copied the inputs
    behind a long matmul: a kernel launched on the wrong stream would read stale copies."""
    src = torch.randn(4096, 4096, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        staged = [torch.zeros_like(t) for t in inputs]
        torch.mm(src, src)
        for dst, t in zip(staged, inputs):
            dst.copy_(t)
        result = op(*staged)
    s.synchronize()
    return result


def rel_frobenius(got, want):
    got, want = got.double(), want.double()
    return float(torch.linalg.norm(got - want) / torch.linalg.norm(want).clamp_min(1e-300))


_ULP = {torch.bfloat16: (7, -126), torch.float16: (10, -14)}  # mantissa bits, smallest normal exponent


def within_one_ulp(got, want, dtype, slack=0.0):
    """|got - want| <= one ulp of ``dtype`` (bf16 or fp16) at want's magnitude
    (2**(e - mantissa bits) for |want| in [2**e, 2**(e+1))) + ``slack``."""
    bits, emin = _ULP[dtype]
    want64 = want.double()
    ulp = torch.exp2(torch.floor(torch.log2(want64.abs().clamp_min(2.0**emin))) - bits)
    return bool(((got.double() - want64).abs() <= ulp + slack).all())


def within_one_bf16_ulp(got, want, slack=0.0):
    """``within_one_ulp`` for bf16 (for logits, ``slack`` is ``fp32_sum_error``)."""
    return within_one_ulp(got, want, torch.bfloat16, slack)


def fp32_sum_error(a, b):
    """A bound on the fp32 accumulation error of ``a @ b.T``: 8 * sqrt(H) * 2**-24 * (|a| @ |b|.T).

    Below a bf16 ulp except where the sum cancels to far less than its terms; there the bf16
    result can be off by more than one ulp of the (tiny) exact value."""
    return 8 * a.shape[1] ** 0.5 * 2.0**-24 * (a.double().abs() @ b.double().abs().T)
