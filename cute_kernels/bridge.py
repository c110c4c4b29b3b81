"""The torch tensor bridge: the only place torch tensors meet kernel arguments.

It validates (dtype, device, rank, shape, strides, alignment) and raises ``TypeError`` or
``ValueError`` naming the argument and the requirement; it never copies. Compiled functions take
the torch tensors directly (TVM-FFI) and launch on torch's current stream of their device, which
TVM-FFI reads from torch at call time; the bridge only makes that device current when it is not.
A ``Launcher`` holds one validated problem's compiled functions, so a call that has been checked
(by an op, or by the dispatcher's cached plan) reaches its kernel with a dict lookup.
"""

from __future__ import annotations

import functools

import torch

from .checks import check_tensor

from .compile import default_cache
from .keys import arch_of_capability, unsupported_arch

MAX_ALIGN = 16  # bytes: the widest vector access any kernel makes


def check_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (row-major); got strides {t.stride()}")


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """All tensors on one CUDA device; returns it."""
    items = iter(tensors.items())
    first_name, first = next(items)
    device = first.device
    if device.type != "cuda":
        raise ValueError(f"{first_name} must be a CUDA tensor; got device {device}")
    for name, t in items:
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {device}; "
                             "all tensors must be on one CUDA device")
    return device


def check_no_overlap(out_name: str, out: torch.Tensor, /, **inputs: torch.Tensor | None) -> None:
    """An output may not share memory with an input (None: absent): the kernels read and write
    in parallel."""
    lo, hi = _span(out)
    for name, t in inputs.items():
        if t is None:
            continue
        t_lo, t_hi = _span(t)
        if lo < t_hi and t_lo < hi:
            raise ValueError(f"{out_name} overlaps {name} in memory; pass a separate output tensor")


def check_output(name: str, out, /, *, dtype: torch.dtype, shape: tuple, device: torch.device,
                 **inputs: torch.Tensor | None) -> None:
    """A given output: a ``dtype`` tensor of ``shape`` on ``device`` (the inputs'), sharing no
    memory with ``inputs`` (None: absent). Its layout is the caller's to check."""
    check_tensor(name, out, (dtype,), shape)
    if out.device != device:
        raise ValueError(f"{name} is on {out.device} but the inputs are on {device}; "
                         "all tensors must be on one CUDA device")
    check_no_overlap(name, out, **inputs)


def check_aligned(need: int, **tensors: torch.Tensor) -> None:
    """TMA and vector accesses need ``need``-byte (a power of two) aligned data pointers."""
    for name, t in tensors.items():
        if t.data_ptr() % need:
            raise ValueError(f"{name} must be {need}-byte aligned (its data pointer is not)")


def check_strides(name: str, t: torch.Tensor, strides: tuple, why: str) -> None:
    """``t`` has ``strides`` (what ``why`` asks for). Strides of size-1 dims carry no meaning;
    torch may report anything there."""
    ok = all(size <= 1 or got == want for size, got, want in zip(t.shape, t.stride(), strides))
    if not ok:
        raise ValueError(f"{name} must have strides {strides} for {why}; got {t.stride()}")


def _span(t: torch.Tensor) -> tuple[int, int]:
    if t.numel() == 0:
        return (0, 0)
    extent = sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def alignment(*tensors: torch.Tensor) -> int:
    """Largest power-of-two byte alignment (<= 16) that every tensor's data pointer has."""
    bits = MAX_ALIGN
    for t in tensors:
        bits |= t.data_ptr()
    return bits & -bits  # the lowest set bit


@functools.lru_cache(maxsize=None)
def device_arch(index: int) -> str:
    """The target of GPU ``index``; RuntimeError on a GPU the kernels are not built for."""
    arch = arch_of_capability(*torch.cuda.get_device_capability(index))
    if why := unsupported_arch(arch):
        raise RuntimeError(f"cute_kernels: cuda:{index} is {arch}; {why} (use the dispatch module, which falls back "
                           "to torch)")
    return arch


@functools.lru_cache(maxsize=None)
def num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


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
    return cache.get(kernel, arch, num_sms(device.index))


# The current CUDA device's index: ``torch.cuda.current_device()`` without its lazy-initialisation
# check, which costs more than the query (a launch holds CUDA tensors: CUDA is initialised).
# None in a torch built without CUDA, where nothing launches.
current_device = getattr(torch._C, "_cuda_getDevice", None)


def launch(fn, device: torch.device, *args) -> None:
    """Calls ``fn`` with ``device`` current (torch tensors on cuda:1 while cuda:0 is current)."""
    if device.index == current_device():
        fn(*args)
    else:
        with torch.cuda.device(device):
            fn(*args)


# Split-K workspaces (int32, zeroed when made): one per (device, stream) for eager calls, like
# cuBLAS's, so calls on concurrent streams never share one, and one per device that CUDA graph
# captures share (a capture cannot zero new memory before its kernels would run). Two graphs
# replayed concurrently on different streams would share it: replay graphs of one device in one
# stream order. Replaced workspaces stay alive: a captured graph keeps their addresses.
_workspaces: dict = {}
_retired: list = []
# The smallest workspace made (4 MiB): the tensor-core router's split up to M ~ 700 on the presets,
# so warming one M of a tier's window sizes it for the window's other M.
WORKSPACE_MIN_INTS = 1 << 20
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def workspace(device: torch.device, ints: int) -> torch.Tensor:
    """A zero-initialised int32 workspace of at least ``ints`` words for a launch on ``device``'s
    current stream. The kernels leave it as they found it (counters back at zero)."""
    index = device.index
    capturing = torch.cuda.is_current_stream_capturing()
    key = (index, None) if capturing else (index, _raw_stream(index))
    ws = _workspaces.get(key)
    if ws is not None and ws.numel() >= ints:
        return ws
    if capturing:
        raise RuntimeError(
            f"cute_kernels: a CUDA graph is being captured and the split-K workspace on {device} holds "
            f"{0 if ws is None else ws.numel()} of the {ints} words this call needs; run the op (or its "
            "warmup) once outside the capture at this size first")
    # Grow this stream's workspace and the captures' one together, so a warmed-up size is ready
    # for a capture on any stream.
    for k in (key, (index, None)):
        old = _workspaces.get(k)
        if old is None or old.numel() < ints:
            if old is not None:
                _retired.append(old)
            size = max(ints, WORKSPACE_MIN_INTS, 2 * (0 if old is None else old.numel()))
            _workspaces[k] = torch.zeros(size, dtype=torch.int32, device=device)
    torch.cuda.current_stream(device).synchronize()  # zeroed before any stream uses it
    return _workspaces[key]


class Launcher:
    """Launches the kernels of one validated problem, each specialisation's function looked up once.

    ``launch(key, *args)`` launches ``kernel_of(key)``: ``key`` is what picks the specialisation
    beyond the problem (M, the pointers' alignment; None when nothing does). The caller has
    checked ``args``. At most ``MAX_KEYS`` functions are kept (then the map starts over, so a
    stream of new sizes cannot grow it); ``KernelCache.clear_memory`` drops them. A miss goes
    through ``compiled``: a CUDA graph capture still never compiles or loads."""

    MAX_KEYS = 64

    def __init__(self, kernel_of, device: torch.device):
        self.kernel_of = kernel_of
        self.device = device
        self.index = device.index
        self.functions = default_cache().memo()

    # Callers keep the bound method: calling it costs less than an instance's __call__.
    def launch(self, key, *args) -> None:
        fn = self.functions.get(key)
        if fn is None:
            fn = self._load(key)
        if self.index == current_device():
            fn(*args)
        else:
            launch(fn, self.device, *args)

    def _load(self, key):
        fn = compiled(self.kernel_of(key), self.device)
        if len(self.functions) >= self.MAX_KEYS:
            self.functions.clear()
        self.functions[key] = fn
        return fn
