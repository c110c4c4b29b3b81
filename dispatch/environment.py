"""What the machine offers: the GPU arch of a device and whether the CuTe kernels can run.

``device_arch`` is the single place the dispatcher asks for a device's arch; tests (or anyone
simulating another GPU) replace ``dispatch.environment.device_arch`` and call
``dispatch.clear_cache()``. Everything here runs when a decision is first made, never per call,
and nothing imports the CuTe DSL: whether it is installed is looked up, not imported.
"""

from __future__ import annotations

import functools

import torch

from cute_kernels import compile as compile_layer
from cute_kernels import keys

# What a CuTe op raises when it has no compiled kernel to run (no DSL to compile it and none
# ahead of time): the dispatcher then drops that tier for the problem.
MISSING_KERNEL_ERRORS = (compile_layer.KernelUnavailableError,)


class Unavailable(str):
    """A reason that holds for every call on this machine (no GPU, an old GPU, no CuTe DSL).

    The dispatcher warns once per such reason when it falls back, instead of silently running
    slower; ordinary reasons (a dtype, an alignment) are only shown by ``dispatch.explain``."""


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> str:
    return keys.arch_of_capability(*torch.cuda.get_device_capability(index))


def device_arch(device: torch.device) -> str | None:
    """``"sm_90a"``, ``"sm_100a"``, ``"sm_80"``...; None for a device that is not a CUDA GPU."""
    if device.type != "cuda":
        return None
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


def kernels_unavailable() -> str | None:
    """Why no CuTe kernel can run in this process (no DSL to compile one and no ahead-of-time
    directory to load one from); None when they can."""
    if keys.dsl_available() or compile_layer.aot_dir() is not None:
        return None
    return ("the CuTe DSL (nvidia-cutlass-dsl) is not installed and no ahead-of-time kernel directory is set "
            f"(${compile_layer.AOT_ENV})")


def cute_unavailable(device: torch.device) -> str | None:
    """Why the CuTe kernels cannot run on ``device``; None when they can."""
    arch = device_arch(device)
    if arch is None:
        where = f"tensors are on {device.type}, not a CUDA GPU"
        return Unavailable(where) if device.type == "cpu" else where
    if why := keys.unsupported_arch(arch):
        return Unavailable(f"{device} is {arch}; {why}")
    if why := kernels_unavailable():
        return Unavailable(why)
    return None
