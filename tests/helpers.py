"""Shared GPU-test helpers (imported by the *_gpu.py test files)."""

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
