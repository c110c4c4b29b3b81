"""Ops called from several Python threads at once, each thread on its own non-default CUDA stream,
and ops on cuda:1 tensors while cuda:0 is current; every result against the spec (``spec_check``).

Each call's inputs are drawn on the caller's stream right behind a long matmul: an op that
launched on any other stream would run before its inputs exist and give a wrong result.
"""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import cute_kernels
import dispatch
from cute_kernels.compile import default_cache
from spec_check import Maker, assert_matches_spec, snapshot

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16
THREADS, ROUNDS = 4, 5

CALLS = {
    "pack_topk": lambda n: {"ids": n.randint(256, 300, 8, dtype=torch.int64), "weights": n.randn(300, 8,
                                                                                                 dtype=torch.float32)},
    "silu_mul_quant_fp8": lambda n: {"x": n.randn(64, 4096, scale=2.0), "group_size": 128, "scale_layout": "col"},
    "router_gemm": lambda n: {"x": n.randn(8, 7168), "weight": n.randn(256, 7168, scale=0.05)},
    "norm_router_gemm": lambda n: {"x": n.randn(4, 7168, scale=3.0), "norm_weight": n.randn(7168, scale=0.2).add_(1),
                                   "gate_weight": n.randn(256, 7168, scale=0.05)},
}


def ops():
    """``(name, module, op)`` for every op of both implementations that this build has."""
    found = [(name, impl, getattr(impl, name, None)) for impl in (cute_kernels, dispatch) for name in CALLS]
    return [(name, impl.__name__, fn) for name, impl, fn in found if fn is not None]


def call_behind_busy_stream(name, fn, n, busy):
    """Inputs made on the current stream after a long matmul, then the op, then the spec check."""
    torch.mm(busy, busy)
    args = CALLS[name](n)
    before = snapshot(name, args)
    assert_matches_spec(name, before, fn(**args))


def worker(seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    busy = torch.randn(2048, 2048, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # busy exists before the stream uses it
    with torch.cuda.stream(stream):
        for _ in range(ROUNDS):
            calls = ops()
            rng.shuffle(calls)  # threads interleave different ops
            for name, _, fn in calls:
                call_behind_busy_stream(name, fn, Maker("cuda", gen), busy)
    stream.synchronize()
    return len(calls) * ROUNDS


def run_threads(gen):
    seeds = [int(torch.randint(0, 2**31, (1,), generator=gen)) for _ in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(worker, seeds))  # re-raises any thread's failure


def loads():
    s = default_cache().stats
    return s.compiles + s.disk_loads + s.aot_loads


def test_threads_on_their_own_streams(gen):
    worker(1)  # every specialisation loaded once first
    assert run_threads(gen) == THREADS * ROUNDS * len(ops())


def test_threads_racing_to_load_the_same_kernels(gen):
    """With nothing in memory, threads that need one kernel at once load it once between them."""
    default_cache().clear_memory()
    before = loads()
    worker(2)  # how many kernels the workload needs, loaded one thread at a time
    needed = loads() - before
    default_cache().clear_memory()
    before = loads()
    run_threads(gen)
    assert loads() - before == needed


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (tensors on cuda:1 while cuda:0 is current)")
@pytest.mark.parametrize("name,impl,fn", ops(), ids=[f"{impl}.{name}" for name, impl, _ in ops()])
def test_second_gpu_while_the_first_is_current(name, impl, fn, gen):
    """cuda:1 tensors, a non-default current stream on cuda:1, cuda:0 current: the op launches on
    that stream of cuda:1 and leaves cuda:0 current."""
    torch.cuda.set_device(0)
    previous = torch.cuda.current_stream(1)
    busy = torch.randn(2048, 2048, device="cuda:1")
    side = torch.cuda.Stream(device=1)
    side.wait_stream(previous)  # busy exists before the side stream uses it
    with torch.cuda.device(1):
        torch.cuda.set_stream(side)  # cuda:1's current stream, from now until restored
    try:
        assert torch.cuda.current_device() == 0 and torch.cuda.current_stream(1) == side
        call_behind_busy_stream(name, fn, Maker("cuda:1", gen), busy)
        assert torch.cuda.current_device() == 0
    finally:
        with torch.cuda.device(1):
            torch.cuda.set_stream(previous)
