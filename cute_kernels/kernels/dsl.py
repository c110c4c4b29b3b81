"""Device-side helpers every kernel implementation shares: dtype names to DSL types, fake
compile-time arguments, programmatic dependent launch, and allocating a shared-memory plan.

Only implementation modules (``<family>/kernel.py``) import this, and only the compile path
imports those: configurations and everything a call needs at run time import no DSL.
"""

import cutlass
import cutlass.cute as cute
from cutlass.memory import SmemAllocator

DTYPES = {
    "bfloat16": cutlass.BFloat16,
    "float16": cutlass.Float16,
    "float32": cutlass.Float32,
    "int32": cutlass.Int32,
    "int64": cutlass.Int64,
    "float8_e4m3fn": cutlass.Float8E4M3FN,
    "uint8": cutlass.Uint8,
}


def dtype(name: str):
    """The cutlass numeric type for a dtype name of ``DTYPES``."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def fake_tensor(dtype_name: str, shape, stride, align_bytes: int = 16):
    """A compile-time stand-in for a global-memory tensor; ``shape``/``stride`` entries may be
    ``cute.sym_int()`` so one compiled function serves every runtime size."""
    return cute.runtime.make_fake_tensor(dtype(dtype_name), shape, stride=stride, assumed_align=align_bytes)


def fake_stream():
    """The launch stream, taken at call time from the caller's current (torch) stream."""
    return cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)


def pdl_enter(pdl: bool):
    """Programmatic dependent launch, at the point a kernel first reads what the previous kernel
    wrote: wait for that grid, then let the next kernel in the stream start its prologue.

    The next kernel's own ``griddepcontrol.wait`` still waits for this grid to finish and flush,
    so releasing dependents early is safe; it only overlaps their launch with our work.
    """
    if pdl:  # a Python bool: traced inline into the calling kernel
        cute.arch.griddepcontrol_wait()
        cute.arch.griddepcontrol_launch_dependents()


def allocate(plan) -> dict:
    """Allocates a configuration's shared-memory plan (``common.Slot`` list) in its order:
    name -> tensor. The host sized the launch and checked the budget from the same plan."""
    smem = SmemAllocator()
    return {slot.name: smem.allocate_tensor(dtype(slot.dtype), cute.make_layout(slot.shape, stride=slot.stride),
                                            slot.align) for slot in plan}
