"""Plain-torch building blocks of the fallback tiers, and the device and output checks the op
declarations share (tensor checks: ``cute_kernels.checks``).

fp32 GEMMs here never use TF32: fp32 router weights are meant to stay fp32 (the spec rounds
nothing before the sum), whatever ``torch.backends.cuda.matmul.allow_tf32`` says globally.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

from cute_kernels.checks import dtype_name


_tf32_lock = threading.Lock()


@contextlib.contextmanager
def _ieee_fp32_matmul():
    """TF32 off for the GEMMs issued in the block. The flag is process-wide: the lock keeps two
    callers from restoring it under each other's GEMM (cuBLAS reads it when the GEMM is issued)."""
    with _tf32_lock:
        allowed = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allowed


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` with fp32 operands and fp32 products and sums."""
    b = None if bias is None else bias.float()
    if x.is_cuda:
        with _ieee_fp32_matmul():
            return F.linear(x.float(), weight.float(), b)
    return F.linear(x.float(), weight.float(), b)


def rms_norm_fp32(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x**2) + eps) * weight`` in fp32, unrounded to x's dtype."""
    xf = x.float()
    return xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps) * weight.float()


def finish(value: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None, name: str) -> torch.Tensor:
    """``value`` rounded once to ``dtype``, into ``out`` when it is given."""
    if out is None:
        return value.to(dtype)
    check_out(name, out, tuple(value.shape), dtype)
    return out.copy_(value)


def check_out(name: str, out, shape: tuple, dtype: torch.dtype) -> None:
    """An output's type, dtype and shape: TypeError / ValueError as ``check_tensor`` raises them."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(out).__name__}")
    if out.dtype != dtype or tuple(out.shape) != shape:
        error = TypeError if out.dtype != dtype else ValueError
        raise error(f"{name} must be {dtype_name(dtype)} {list(shape)}; got "
                    f"{dtype_name(out.dtype)} {list(out.shape)}")


def same_device(device: torch.device, *tensors) -> bool:
    """Whether every given tensor (None: absent) is on ``device``: the problem keys' flag, which
    keeps a call that ``check_devices`` refuses off every cached plan."""
    for t in tensors:
        if t is not None and t.device != device:
            return False
    return True


def check_devices(x_name: str, x: torch.Tensor, **tensors) -> None:
    """Every given tensor (None: absent) on ``x``'s device, else ValueError naming it."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but {x_name} is on {x.device}; "
                             "all tensors must be on one device")


def dense(t: torch.Tensor, align: int = 16) -> bool:
    """Contiguous with an ``align``-byte aligned data pointer (what the vectorised kernels need)."""
    return t.is_contiguous() and not t.data_ptr() % align
