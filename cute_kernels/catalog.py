"""Which kernel specialisations exist to compile: per model preset, and every variant (for CI).

The ops choose specialisations at call time from dtypes, shapes, pointer alignment and the
GPU's SM count; each family lists the ones a preset's calls hit (``preset_configs``) and every
code path it has (``variants``), so they can be compiled ahead of use (demo, warmup, AOT, CI).
"""

from __future__ import annotations

import importlib

from .keys import KERNELS_PACKAGE, families
from .kernels.common import H100_SMS
from .presets import Preset


def _family(name: str):
    return importlib.import_module(f"{KERNELS_PACKAGE}.{name}")


def preset_kernels(preset: Preset, pdl: bool = True, num_sms: int = H100_SMS) -> list:
    """Every specialisation a preset's calls use on a GPU of ``num_sms`` SMs (fresh, 16-byte
    aligned tensors; the router at its M buckets)."""
    return [config for name in families() for config in _family(name).preset_configs(preset, pdl, num_sms)]


def all_variants() -> list:
    """Every code path of every kernel family."""
    return [config for name in families() for config in _family(name).variants()]
