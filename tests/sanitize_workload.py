"""A small workload touching every kernel code path, run under compute-sanitizer (make sanitize).

Each case checks its result against the spec, so a sanitizer run also proves the code ran."""

import torch

import cute_kernels
from cute_kernels import reference


def pack_topk_cases():
    for ids_dtype in (torch.int32, torch.int64):
        for weights_dtype in (torch.float32, torch.bfloat16):
            for t, k, offset in ((37, 8, 0), (5, 4, 0), (9, 6, 0), (7, 8, 2), (3, 8, 1), (11, 1, 0)):
                for pdl in (True, False):
                    n = t * k
                    ids = torch.randint(0, 256, (n + offset,), device="cuda").to(ids_dtype)[offset:].view(t, k)
                    w = torch.randn(n + offset, device="cuda").to(weights_dtype)[offset:].view(t, k)
                    out = torch.empty(n + offset, dtype=torch.int32, device="cuda")[offset:].view(t, k)
                    cute_kernels.pack_topk(ids, w, out=out, pdl=pdl)
                    assert torch.equal(out, reference.pack_topk(ids, w)), (ids_dtype, weights_dtype, t, k, offset)
                    yield


if __name__ == "__main__":
    n = sum(1 for _ in pack_topk_cases())
    torch.cuda.synchronize()
    print(f"sanitizer workload: {n} pack_topk launches checked")
