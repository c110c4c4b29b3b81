"""A preset's ops from an AOT directory, in a process that cannot import the CuTe DSL, against the spec.

The directory is built here for this GPU's arch (needs the DSL and the ``aot`` extra), or taken
from $CUTE_KERNELS_AOT_DIR when that is set (e.g. when the whole suite runs DSL-free).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cute_kernels import compile as ck

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]
NO_DSL = Path(__file__).with_name("no_dsl")
PRESET = "gpt-oss-120b"

CHECK = textwrap.dedent("""
    import sys
    import torch
    import cute_kernels
    from cute_kernels import compile as ck, presets, reference

    p = presets.get(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    for ids_dtype in (torch.int32, torch.int64):
        for w_dtype in (torch.float32, torch.bfloat16):
            ids = torch.randint(0, p.num_experts, (37, p.top_k), generator=g).to(ids_dtype).cuda()
            w = torch.rand(37, p.top_k, generator=g).to(w_dtype).cuda()
            assert torch.equal(cute_kernels.pack_topk(ids, w), reference.pack_topk(ids, w))

    h, group = p.moe_intermediate_size, 128 if p.moe_intermediate_size % 128 == 0 else 64
    x = (torch.randn(37, 2 * h, generator=g) * 2).to(torch.bfloat16).cuda()
    q, s = cute_kernels.silu_mul_quant_fp8(x, group)
    want_q, want_s = reference.silu_mul_quant_fp8(x, group)
    assert torch.allclose(s, want_s, rtol=1e-6, atol=0)
    gq, wq = q.double(), want_q.double()
    step = torch.maximum(gq.abs(), wq.abs()) / 8 + 2.0**-9  # one e4m3 rounding step at most
    assert ((gq - wq).abs() <= step).all()

    bias = torch.randn(p.num_experts, generator=g).to(torch.bfloat16).cuda() if p.gate_bias else None
    out_dtype = getattr(torch, p.logits_dtype)
    for m in (1, 5, 64):
        x = torch.randn(m, p.hidden_size, generator=g).to(torch.bfloat16).cuda()
        w = torch.randn(p.num_experts, p.hidden_size, generator=g).to(getattr(torch, p.gate_dtype)).cuda()
        got = cute_kernels.router_gemm(x, w, bias, out_dtype=out_dtype).double()
        want = reference.router_gemm(x, w, bias, out_dtype=torch.float32).double()
        assert torch.allclose(got, want, rtol=2e-2, atol=2e-2), (got - want).abs().max()

    stats = ck.default_cache().stats
    assert stats.compiles == 0 and stats.disk_loads == 0 and stats.aot_loads > 0, stats
    assert sys.modules.get("cutlass") is None and not any(m.startswith("cutlass.") for m in sys.modules)
    print("ok", stats.aot_loads)
""")


def aot_dir(tmp_path) -> Path:
    if os.environ.get(ck.AOT_ENV):
        return Path(os.environ[ck.AOT_ENV])
    import torch

    from cute_kernels import aot, bridge, runtime_shim

    arch = bridge.device_arch(torch.cuda.current_device())
    try:
        summary = aot.build(aot.preset_jobs([PRESET], [arch]), tmp_path)
    except runtime_shim.ToolchainError as e:
        pytest.skip(f"cannot link AOT libraries on this machine: {e}")
    assert not summary.failed, summary.failed
    return tmp_path


def test_preset_runs_from_aot_without_dsl(tmp_path):
    directory = aot_dir(tmp_path)
    # Keep the inherited path (where torch and apache-tvm-ffi may live): the blocker comes
    # first, so the DSL stays unimportable even when it is installed there too.
    path = [str(NO_DSL), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **{ck.AOT_ENV: str(directory)})
    result = subprocess.run([sys.executable, "-c", CHECK, PRESET], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
