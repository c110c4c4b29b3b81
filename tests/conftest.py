import importlib.metadata
import os

import pytest
import torch


def pytest_report_header(config):
    try:
        dsl = importlib.metadata.version("nvidia-cutlass-dsl")
    except importlib.metadata.PackageNotFoundError:
        dsl = "not installed"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}), nvidia-cutlass-dsl {dsl}"


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
    skip = pytest.mark.skip(reason="needs an sm_90+ CUDA GPU; run `make test-gpu` on the device")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty kernel cache for the test (and any subprocess it starts)."""
    d = tmp_path / "kcache"
    monkeypatch.setenv("CUTE_KERNELS_CACHE_DIR", str(d))
    return d


@pytest.fixture
def gen():
    """A CPU generator with a fresh seed per test run, so inputs differ between runs; the seed
    is printed (pytest shows it with a failure) to reproduce one."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"generator seed {seed}")
    return torch.Generator().manual_seed(seed)
