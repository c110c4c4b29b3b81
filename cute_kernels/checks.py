"""Argument checks every layer shares (the spec, the kernels' bridge, the dispatcher): one tensor
checker with one order (type, dtype, rank, sizes) and one message style (the argument's name
first, then the requirement, then what it got), and the one map between torch dtypes and the
dtype names kernel configurations use. torch and the standard library only."""

from __future__ import annotations

import torch

_BY_NAME = {str(d).removeprefix("torch."): d for d in (
    torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.float8_e4m3fn)}


def dtype_name(dtype: torch.dtype) -> str:
    """torch's spelling without the prefix: ``torch.bfloat16`` -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a name of ``dtype_name`` spells."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown dtype name {name!r}") from None


def torch_dtypes(names) -> tuple:
    return tuple(torch_dtype(n) for n in names)


def check_tensor(name: str, t, dtypes, shape: tuple) -> torch.Size:
    """``t`` is a tensor of one of ``dtypes`` whose rank is ``len(shape)`` and whose sizes match
    ``shape`` (None: any size). TypeError for the type or dtype, ValueError for rank and sizes.
    Returns its shape."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {', '.join(dtype_name(d) for d in dtypes)}; "
                        f"got {dtype_name(t.dtype)}")
    if t.dim() != len(shape):
        raise ValueError(f"{name} must be {len(shape)}-D; got shape {tuple(t.shape)}")
    for dim, want in enumerate(shape):
        if want is not None and t.shape[dim] != want:
            raise ValueError(f"{name} must have size {want} in dim {dim}; got shape {tuple(t.shape)}")
    return t.shape


def require(ok: bool, message: str, error=ValueError) -> None:
    """Raise ``error(message)`` unless ``ok``; the message starts with the argument's name."""
    if not ok:
        raise error(message)
