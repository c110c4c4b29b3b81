"""Device and host helpers shared by every kernel: dtype names, fake tensors, PDL."""

from .dsl import cute, cutlass

# Kernel configs name dtypes by these strings (torch's spelling) so compile keys stay plain data.
DTYPES = {
    "bfloat16": cutlass.BFloat16,
    "float16": cutlass.Float16,
    "float32": cutlass.Float32,
    "int32": cutlass.Int32,
    "int64": cutlass.Int64,
    "float8_e4m3fn": cutlass.Float8E4M3FN,
    "uint8": cutlass.Uint8,
}


# Bits per element, known without the DSL: configs derive tile sizes (compile keys) from them.
WIDTHS = {"bfloat16": 16, "float16": 16, "float32": 32, "int32": 32, "int64": 64, "float8_e4m3fn": 8, "uint8": 8}


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
