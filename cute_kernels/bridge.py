"""The torch tensor bridge: the only place torch tensors meet kernel arguments.

It validates (dtype, device, rank, shape, strides, alignment) and raises ``TypeError`` or
``ValueError`` naming the argument and the requirement; it never copies. Compiled functions take
the torch tensors directly (TVM-FFI) and launch on torch's current stream of their device, which
TVM-FFI reads from torch at call time; the bridge only makes that device current when it is not.
"""

from __future__ import annotations

import functools

import torch

from .compile import arch_of_capability, default_cache

DTYPE_NAMES = {
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float32: "float32",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float8_e4m3fn: "float8_e4m3fn",
}
MAX_ALIGN = 16  # bytes: the widest vector access any kernel makes


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES[dtype]


def check_tensor(name: str, t, *, dtypes, shape) -> None:
    """``shape`` is a tuple of ints or None (any size); its length is the required rank."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}; got {str(t.dtype).replace('torch.', '')}")
    if t.dim() != len(shape):
        raise ValueError(f"{name} must be {len(shape)}-D; got shape {tuple(t.shape)}")
    for dim, (got, want) in enumerate(zip(t.shape, shape)):
        if want is not None and got != want:
            raise ValueError(f"{name} must have size {want} in dim {dim}; got shape {tuple(t.shape)}")


def check_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (row-major); got strides {t.stride()}")


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """All tensors on one CUDA device; returns it."""
    items = list(tensors.items())
    first_name, first = items[0]
    if first.device.type != "cuda":
        raise ValueError(f"{first_name} must be a CUDA tensor; got device {first.device}")
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; "
                             "all tensors must be on one CUDA device")
    return first.device


def check_no_overlap(out_name: str, out: torch.Tensor, /, **inputs: torch.Tensor) -> None:
    """An output may not share memory with an input: the kernels read and write in parallel."""
    lo, hi = _span(out)
    for name, t in inputs.items():
        t_lo, t_hi = _span(t)
        if lo < t_hi and t_lo < hi:
            raise ValueError(f"{out_name} overlaps {name} in memory; pass a separate output tensor")


def _span(t: torch.Tensor) -> tuple[int, int]:
    if t.numel() == 0:
        return (0, 0)
    extent = sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def alignment(*tensors: torch.Tensor) -> int:
    """Largest power-of-two byte alignment (<= 16) that every tensor's data pointer has."""
    align = MAX_ALIGN
    for t in tensors:
        while t.data_ptr() % align:
            align //= 2
    return align


@functools.lru_cache(maxsize=None)
def device_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    if major < 9:
        raise RuntimeError(
            f"cute_kernels kernels need an sm_90 (Hopper) or newer GPU; cuda:{index} is "
            f"sm_{major}{minor} (use the dispatch module, which falls back to torch)"
        )
    return arch_of_capability(major, minor)


def compiled(kernel, device: torch.device):
    """The compiled function for ``kernel`` on ``device``'s arch (memory -> disk -> compile).

    A CUDA graph capture must never compile or load: that is refused with a clear error."""
    cache = default_cache()
    arch = device_arch(device.index)
    fn = cache.lookup_memory(kernel, arch)
    if fn is not None:
        return fn
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"cute_kernels: {type(kernel).__name__} {kernel} is not loaded yet and a CUDA graph is "
            "being captured; run the op once (or its warmup) before capturing"
        )
    return cache.get(kernel, arch)


def launch(fn, device: torch.device, *args) -> None:
    """Calls ``fn`` with ``device`` current (torch tensors on cuda:1 while cuda:0 is current)."""
    if device.index == torch.cuda.current_device():
        fn(*args)
    else:
        with torch.cuda.device(device):
            fn(*args)
