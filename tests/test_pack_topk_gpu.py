"""pack_topk on the GPU against the spec: bit-exact, every dtype pair, any T and k."""

import pytest
import torch

import cute_kernels
from cute_kernels import reference
from helpers import run_on_busy_stream

pytestmark = pytest.mark.gpu
POISON = -1  # unreachable: it needs id bits 0xFFFF, and ids here stay below 0x8000 (or are checked)


def make(t, k, ids_dtype, weights_dtype, gen, id_limit=1024):
    ids = torch.randint(0, id_limit, (t, k), generator=gen, dtype=torch.int64).to(ids_dtype)
    w = (torch.randn(t, k, generator=gen) * 4).to(weights_dtype)
    return ids.cuda(), w.cuda()


def check(ids, w, **kw):
    out = torch.full(ids.shape, POISON, dtype=torch.int32, device=ids.device)
    got = cute_kernels.pack_topk(ids, w, out=out, **kw)
    torch.cuda.synchronize()
    assert got is out
    want = reference.pack_topk(ids, w)
    assert torch.equal(got, want), f"{(got != want).sum().item()} of {got.numel()} elements differ"


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("weights_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [0, 1, 2, 3, 7, 16, 127, 1024, 16385])
@pytest.mark.parametrize("k", [1, 2, 6, 8, 9])
@pytest.mark.parametrize("pdl", [True, False])
def test_matches_spec(ids_dtype, weights_dtype, t, k, pdl, gen):
    check(*make(t, k, ids_dtype, weights_dtype, gen), pdl=pdl)


def test_allocates_output_and_handles_special_values(gen):
    specials = torch.tensor([0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"),
                             1e-40, -1e-40, 3.0e38, 1.00390625, 1.0039063])  # ties round to even
    w = specials.repeat(8)[:96].view(12, 8).cuda()
    ids = torch.tensor([0, 1, 255, 32767, 65535, 65536 + 7, 2**31 - 1, -1]).repeat(12, 1)
    for ids_dtype in (torch.int32, torch.int64):
        got = cute_kernels.pack_topk(ids.to(ids_dtype).cuda(), w)
        assert got.dtype == torch.int32 and got.shape == (12, 8)
        assert torch.equal(got, reference.pack_topk(ids.to(ids_dtype).cuda(), w))
    big = torch.full((2, 8), 2**40 + 5, dtype=torch.int64).cuda()  # low bits survive, as in the spec
    assert torch.equal(cute_kernels.pack_topk(big, w[:2]), reference.pack_topk(big, w[:2]))


@pytest.mark.parametrize("offset", [1, 2, 3, 4])
def test_misaligned_views(offset, gen):
    """Views with a storage offset lose 16-byte alignment: a narrower vector path runs."""
    ids, w = make(65, 8, torch.int32, torch.float32, gen)
    ids_v = torch.empty(65 * 8 + offset, dtype=torch.int32, device="cuda")[offset:].view(65, 8)
    w_v = torch.empty(65 * 8 + offset, device="cuda")[offset:].view(65, 8)
    ids_v.copy_(ids)
    w_v.copy_(w)
    out = torch.full((65 * 8 + offset,), POISON, dtype=torch.int32, device="cuda")[offset:].view(65, 8)
    cute_kernels.pack_topk(ids_v, w_v, out=out)
    assert torch.equal(out, reference.pack_topk(ids, w))


def test_rejects_what_it_cannot_do_correctly(gen):
    ids, w = make(16, 8, torch.int32, torch.float32, gen)
    with pytest.raises(ValueError, match="ids must be contiguous"):
        cute_kernels.pack_topk(ids.t().contiguous().t(), w)
    with pytest.raises(TypeError, match="out must have dtype int32"):
        cute_kernels.pack_topk(ids, w, out=torch.empty(16, 8, device="cuda"))
    with pytest.raises(ValueError, match=r"out must have size 16 in dim 0"):
        cute_kernels.pack_topk(ids, w, out=torch.empty(15, 8, dtype=torch.int32, device="cuda"))
    with pytest.raises(ValueError, match="out overlaps ids"):
        cute_kernels.pack_topk(ids, w, out=ids)
    with pytest.raises(ValueError, match="out is on cpu"):
        cute_kernels.pack_topk(ids, w, out=torch.empty(16, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="weights is on cpu"):
        cute_kernels.pack_topk(ids, w.cpu())


def test_non_default_stream_orders_after_producer(gen):
    """The kernel runs on torch's current stream: it must see ids written just before on it."""
    ids, w = make(4096, 8, torch.int64, torch.float32, gen)
    out = run_on_busy_stream(cute_kernels.pack_topk, ids, w)
    assert torch.equal(out, reference.pack_topk(ids, w))


@pytest.mark.parametrize("pdl", [True, False])
def test_cuda_graph_replay_with_new_inputs(pdl, gen):
    ids, w = make(300, 8, torch.int32, torch.bfloat16, gen)
    out = torch.full_like(ids, POISON)
    cute_kernels.pack_topk(ids, w, out=out, pdl=pdl)  # warm: loads the kernel outside capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cute_kernels.pack_topk(ids, w, out=out, pdl=pdl)
        cute_kernels.pack_topk(ids, w, out=out, pdl=pdl)  # back to back: PDL chain inside a graph
    for _ in range(3):
        new_ids, new_w = make(300, 8, torch.int32, torch.bfloat16, gen)
        ids.copy_(new_ids)
        w.copy_(new_w)
        out.fill_(POISON)
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, reference.pack_topk(new_ids, new_w))


@pytest.mark.filterwarnings("ignore:The CUDA Graph is empty")  # the refused launch leaves it empty
def test_capture_without_warmup_is_a_clear_error(gen):
    ids, w = make(8, 13, torch.int32, torch.float32, gen)  # k = 13: a specialisation not yet loaded
    g = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="not loaded yet and a CUDA graph is being captured"):
        with torch.cuda.graph(g):
            cute_kernels.pack_topk(ids, w)


def test_deterministic(gen):
    ids, w = make(4096, 8, torch.int64, torch.float32, gen)
    first = cute_kernels.pack_topk(ids, w)
    for _ in range(100):
        assert torch.equal(cute_kernels.pack_topk(ids, w), first)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (tensors on cuda:1)")
def test_tensors_on_second_device(gen):
    ids, w = (x.to("cuda:1") for x in make(64, 8, torch.int32, torch.float32, gen))
    with torch.cuda.device(0):
        out = cute_kernels.pack_topk(ids, w)
    assert out.device == ids.device and torch.equal(out, reference.pack_topk(ids, w))
