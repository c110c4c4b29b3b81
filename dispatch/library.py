"""The dispatched ops as torch custom ops (``torch.ops.cute_kernels.<op>``), for torch.compile.

Each op is opaque to the compiler: its real implementation is the eager dispatcher, so the tier
choice (which depends on M) happens when the compiled graph runs, never when it is traced, and a
graph traced with a symbolic M serves every M. Each op's declaration gives the schema (its
parameters without the output tensors) and the fake implementation (output shapes, dtypes and
strides, after checking the arguments the way a call would). The ops allocate their outputs and
mutate nothing; given output tensors are filled outside them (``tiers.Op.compiled``).
"""

from __future__ import annotations

import torch

from . import ops  # noqa: F401 - registers every op
from .tiers import OPS


def _register(op) -> None:
    def impl(*inputs):
        args = list(inputs)
        for i in op._output_at:  # the outputs are allocated inside
            args.insert(i, None)
        return op.run(*args)

    if op.traced is not None:
        impl = op.traced[0]

    custom = torch.library.custom_op(f"cute_kernels::{op.name}", impl, mutates_args=(), schema=op.schema)
    custom.register_fake(op.fake)
    op.custom_op = custom


for _op in OPS.values():
    _register(_op)
