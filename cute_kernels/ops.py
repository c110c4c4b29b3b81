"""Public ops: validate through the bridge, pick the compiled specialisation, launch."""

from __future__ import annotations

import functools

import torch

from . import bridge
from .kernels.topk_pack import TopkPack

_MAX_ELEMENTS = 2**31 - 1  # kernels index with 32-bit integers


def _pow2_dividing(n: int, cap: int) -> int:
    v = cap
    while n % v:
        v //= 2
    return v


@functools.lru_cache(maxsize=None)  # the per-call host path builds no new objects
def pack_topk_kernel(ids_dtype: str, weights_dtype: str, k: int, align_bytes: int, pdl: bool) -> TopkPack:
    """The specialisation for these dtypes, k and pointer alignment (bytes, a power of two).

    Each thread moves ``vec`` elements; ``vec`` divides k (so groups never straddle the end) and
    every vector access (at most 16 bytes each) within the tensors' alignment."""
    sizes = (8 if ids_dtype == "int64" else 4, 4 if weights_dtype == "float32" else 2, 4)
    vec = _pow2_dividing(k, 8)
    while vec > 1 and any(min(vec * size, 16) > align_bytes for size in sizes):
        vec //= 2
    return TopkPack(ids_dtype, weights_dtype, k, vec, pdl)


def pack_topk(ids: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None,
              pdl: bool = True) -> torch.Tensor:
    """Packs top-k expert ids and routing weights into int32: ``(id << 16) | bits(bf16(weight))``.

    ids: int32/int64 [T, k]; weights: float32/bfloat16 [T, k]; out: int32 [T, k] (allocated if
    None). All contiguous, on one CUDA device (sm_90+). Only the low 16 bits of an id survive.
    ``pdl``: launch with programmatic dependent launch (overlaps the previous kernel's tail).
    Semantics: ``cute_kernels.reference.pack_topk``.
    """
    bridge.check_tensor("ids", ids, dtypes=(torch.int32, torch.int64), shape=(None, None))
    t, k = ids.shape
    bridge.check_tensor("weights", weights, dtypes=(torch.float32, torch.bfloat16), shape=(t, k))
    device = bridge.check_same_device(ids=ids, weights=weights)
    if out is None:
        out = torch.empty((t, k), dtype=torch.int32, device=device)
    else:
        bridge.check_tensor("out", out, dtypes=(torch.int32,), shape=(t, k))
        bridge.check_same_device(ids=ids, out=out)
        bridge.check_no_overlap("out", out, ids=ids, weights=weights)
    for name, x in (("ids", ids), ("weights", weights), ("out", out)):
        bridge.check_contiguous(name, x)
    if t * k > _MAX_ELEMENTS:
        raise ValueError(f"ids has {t * k} elements; at most {_MAX_ELEMENTS} are supported")
    if t * k == 0:
        return out
    kernel = pack_topk_kernel(bridge.dtype_name(ids.dtype), bridge.dtype_name(weights.dtype), k,
                              bridge.alignment(ids, weights, out), pdl)
    bridge.launch(bridge.compiled(kernel, device), device, ids, weights, out)
    return out
