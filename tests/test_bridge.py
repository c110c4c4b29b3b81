"""Argument checks of the bridge and the ops that run on any machine (no GPU needed)."""

import pytest
import torch

import cute_kernels
from cute_kernels import bridge


def test_check_tensor_names_argument_and_requirement():
    with pytest.raises(TypeError, match=r"ids must be a torch.Tensor, got list"):
        bridge.check_tensor("ids", [1, 2], dtypes=(torch.int32,), shape=(None,))
    with pytest.raises(TypeError, match=r"ids must have dtype int32, int64; got float32"):
        bridge.check_tensor("ids", torch.zeros(2, 2), dtypes=(torch.int32, torch.int64), shape=(None, None))
    with pytest.raises(ValueError, match=r"ids must be 2-D; got shape \(4,\)"):
        bridge.check_tensor("ids", torch.zeros(4, dtype=torch.int32), dtypes=(torch.int32,), shape=(None, None))
    with pytest.raises(ValueError, match=r"weights must have size 8 in dim 1; got shape \(3, 7\)"):
        bridge.check_tensor("weights", torch.zeros(3, 7), dtypes=(torch.float32,), shape=(3, 8))


def test_contiguity_alignment_overlap():
    base = torch.zeros(64, 8, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"out must be contiguous .*strides \(1, 8\)"):
        bridge.check_contiguous("out", base.t())
    assert bridge.alignment(base) == 16  # torch allocations are at least 16-byte aligned
    assert bridge.alignment(base.view(-1)[1:]) == 4  # a storage offset of one int32
    assert bridge.alignment(base.view(-1)[2:], base) == 8
    with pytest.raises(ValueError, match=r"out overlaps ids"):
        bridge.check_no_overlap("out", base[1:3], ids=base[2:4])
    bridge.check_no_overlap("out", base[0:2], ids=base[2:4])  # adjacent rows do not overlap


def test_pack_topk_rejects_bad_arguments_before_touching_a_gpu():
    ids = torch.zeros(4, 8, dtype=torch.int32)
    w = torch.zeros(4, 8)
    with pytest.raises(ValueError, match=r"ids must be a CUDA tensor; got device cpu"):
        cute_kernels.pack_topk(ids, w)
    with pytest.raises(TypeError, match=r"weights must have dtype float32, bfloat16; got float16"):
        cute_kernels.pack_topk(ids, w.half())
    with pytest.raises(ValueError, match=r"weights must have size 8 in dim 1"):
        cute_kernels.pack_topk(ids, w[:, :7])
    with pytest.raises(TypeError, match=r"ids must have dtype int32, int64; got int16"):
        cute_kernels.pack_topk(ids.short(), w)
