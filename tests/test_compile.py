"""Every kernel variant compiles for Hopper and Blackwell on a machine without a GPU."""

import pytest

from cute_kernels import catalog
from cute_kernels.compile import compile_kernel

VARIANTS = catalog.all_variants()


@pytest.mark.parametrize("arch", ["sm_90a", "sm_100a"])
@pytest.mark.parametrize("kernel", VARIANTS, ids=[repr(k) for k in VARIANTS])
def test_compiles(kernel, arch):
    fn = compile_kernel(kernel, arch)
    assert callable(fn)


def test_vector_width_follows_k_and_alignment():
    from cute_kernels.kernels.pack_topk import pick as pack_topk_kernel

    assert pack_topk_kernel("int32", "float32", 8, 16, True).vec == 8
    assert pack_topk_kernel("int32", "float32", 6, 16, True).vec == 2
    assert pack_topk_kernel("int32", "float32", 8, 8, True).vec == 2  # 8-byte vectors at most
    assert pack_topk_kernel("int64", "float32", 8, 8, True).vec == 1  # one int64 is 8 bytes
    assert pack_topk_kernel("int32", "bfloat16", 7, 16, True).vec == 1
