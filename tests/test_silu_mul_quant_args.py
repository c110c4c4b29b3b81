"""silu_mul_quant_fp8 argument checks that need no GPU: they all fire before the device check."""

import pytest
import torch

import cute_kernels
from cute_kernels.kernels import silu_mul_quant_fp8 as silu_family
from cute_kernels import catalog, ops, presets

op = cute_kernels.silu_mul_quant_fp8


def x_of(t=4, h=256, dtype=torch.bfloat16):
    return torch.zeros(t, 2 * h, dtype=dtype)


def test_rejects_bad_x():
    with pytest.raises(TypeError, match=r"x must have dtype bfloat16, float16; got float32"):
        op(x_of(dtype=torch.float32))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        op([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"x must be 2-D; got shape \(512,\)"):
        op(torch.zeros(512, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"x must have an even width"):
        op(torch.zeros(4, 257, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"x must be a CUDA tensor; got device cpu"):
        op(x_of())


def test_rejects_bad_group_size_and_layout():
    with pytest.raises(ValueError, match=r"group_size must be 64 or 128; got 32"):
        op(x_of(), 32)
    with pytest.raises(ValueError, match=r"H=192 must be a positive multiple of group_size=128"):
        op(x_of(h=192), 128)
    with pytest.raises(ValueError, match=r"group_size=64"):
        op(x_of(h=96), 64)
    with pytest.raises(ValueError, match=r"scale_layout must be 'row' or 'col'; got 'column'"):
        op(x_of(), scale_layout="column")


def test_rejects_bad_scale_ub():
    with pytest.raises(TypeError, match=r"scale_ub must be a one-element float32 tensor; got float"):
        op(x_of(), scale_ub=0.5)
    with pytest.raises(TypeError, match=r"scale_ub must be a one-element float32 tensor; got torch.float16"):
        op(x_of(), scale_ub=torch.ones(1, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"one-element float32 tensor; got torch.float32 \(2,\)"):
        op(x_of(), scale_ub=torch.ones(2))


def test_catalog_covers_every_preset_and_code_path():
    for preset in presets.PRESETS.values():
        silu = [k for k in catalog.preset_kernels(preset) if type(k).__name__ == "SiluMulQuantFp8"]
        assert len(silu) == 1 and silu[0].hidden == preset.moe_intermediate_size
        assert silu[0].hidden % silu[0].group_size == 0
    variants = [k for k in catalog.all_variants() if type(k).__name__ == "SiluMulQuantFp8"]
    assert len(variants) <= 24
    for field, values in (("group_size", {64, 128}), ("scale_layout", {"row", "col"}), ("ue8m0", {True, False}),
                          ("has_scale_ub", {True, False}), ("x_dtype", {"bfloat16", "float16"}),
                          ("pdl", {True, False})):
        assert {getattr(k, field) for k in variants} == values, field
    assert {128, 7168} <= {k.hidden for k in variants}
    assert silu_family.pick("bfloat16", 2048, 128, False, False, "row", True) is \
        silu_family.pick("bfloat16", 2048, 128, False, False, "row", True)
