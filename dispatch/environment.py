"""What the machine offers: the GPU arch of a device and whether the CuTe kernels can run.

``device_arch`` is the single place the dispatcher asks for a device's arch; tests (or anyone
simulating another GPU) replace ``dispatch.environment.device_arch`` and call
``dispatch.clear_cache()``. Everything here runs when a decision is first made, never per call.
"""

from __future__ import annotations

import functools
import importlib
import sys

import torch

MIN_CUTE_ARCH = 90  # the CuTe kernels need Hopper (sm_90a) or newer


class Unavailable(str):
    """A reason that holds for every call on this machine (no GPU, an old GPU, no CuTe DSL).

    The dispatcher warns once per such reason when it falls back, instead of silently running
    slower; ordinary reasons (a dtype, an alignment) are only shown by ``dispatch.explain``."""


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    # Hopper and newer kernels target the arch-specific variant (wgmma, TMA multicast).
    return f"sm_{major}{minor}a" if major * 10 + minor >= MIN_CUTE_ARCH else f"sm_{major}{minor}"


def device_arch(device: torch.device) -> str | None:
    """``"sm_90a"``, ``"sm_100a"``, ``"sm_80"``...; None for a device that is not a CUDA GPU."""
    if device.type != "cuda":
        return None
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


def arch_number(arch: str) -> int:
    """``"sm_90a"`` -> 90, ``"sm_100a"`` -> 100, ``"sm_80"`` -> 80."""
    return int(arch.removeprefix("sm_").rstrip("af"))


# What a CuTe op raises when it has no compiled kernel to run (no DSL to compile it and none
# ahead of time); filled in when cute_kernels is first imported. An empty tuple catches nothing.
MISSING_KERNEL_ERRORS: tuple = ()


@functools.lru_cache(maxsize=None)
def _import_cute_kernels():
    """``(cute_kernels or None, DSL import error or None, cute_kernels import error or None)``."""
    global MISSING_KERNEL_ERRORS
    try:
        importlib.import_module("cutlass")
        dsl_error = None
    except Exception as e:  # noqa: BLE001 - any failure means: the DSL cannot compile here
        dsl_error = f"{type(e).__name__}: {e}"
    try:
        module = importlib.import_module("cute_kernels")
        compile_layer = importlib.import_module("cute_kernels.compile")
    except Exception as e:  # noqa: BLE001
        return None, dsl_error, f"{type(e).__name__}: {e}"
    missing = getattr(compile_layer, "KernelUnavailableError", None)
    MISSING_KERNEL_ERRORS = (missing,) if missing is not None else ()
    return module, dsl_error, None


def cute_kernels_module():
    """``(cute_kernels, None)`` when its kernels can run here (the CuTe DSL compiles them, or an
    ahead-of-time directory holds them), else ``(None, why)``."""
    module, dsl_error, import_error = _import_cute_kernels()
    if module is None:
        return None, (f"the CuTe DSL is not importable ({dsl_error})" if dsl_error
                      else f"cute_kernels cannot be imported ({import_error})")
    if dsl_error is None:
        return module, None
    aot_dir = getattr(sys.modules.get("cute_kernels.compile"), "aot_dir", None)
    if aot_dir is not None and aot_dir() is not None:
        return module, None
    return None, (f"the CuTe DSL is not importable ({dsl_error}) and no ahead-of-time kernel directory "
                  "is set ($CUTE_KERNELS_AOT_DIR)")


def cute_unavailable(device: torch.device, function_name: str) -> str | None:
    """Why ``cute_kernels.<function_name>`` cannot run on ``device``; None when it can."""
    arch = device_arch(device)
    if arch is None:
        where = f"tensors are on {device.type}, not a CUDA GPU"
        return Unavailable(where) if device.type == "cpu" else where
    if arch_number(arch) < MIN_CUTE_ARCH:
        return Unavailable(f"{device} is {arch}; the CuTe kernels need sm_90 or newer")
    module, why = cute_kernels_module()
    if module is None:
        return Unavailable(why)
    if getattr(module, function_name, None) is None:
        return f"cute_kernels.{function_name} is not built in this version"
    return None
