"""The environment the suite ran in: a torch release this project has run its suites on.

pip takes the newest torch the requirement allows on a fresh machine, so CI can meet a release
that nothing here has seen (torch 2.14 began probing for the CuTe DSL at its own import). A new
release fails this test instead of passing unnoticed: run the CPU suite and the GPU suite on it,
then add it here."""

import subprocess
import sys

import torch

# torch 2.11: the GPU machine's; 2.13 and 2.14: what pip took on fresh CPU machines.
TESTED_TORCH = ("2.11", "2.13", "2.14")


def test_torch_is_a_release_the_suites_ran_on():
    release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert release in TESTED_TORCH, (
        f"torch {torch.__version__} is not one of the releases the suites ran on ({', '.join(TESTED_TORCH)}): "
        "run the CPU and GPU suites on it, then add it to TESTED_TORCH")


def test_importing_torch_imports_no_dsl():
    """torch 2.14 registers CuTe DSL kernels of its own (torch._native), for the DSL releases it
    lists (not this project's pin) and lazily: importing torch must import nothing of the DSL."""
    code = "import sys, torch; print(sorted(m for m in sys.modules if m.split('.')[0] == 'cutlass'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
