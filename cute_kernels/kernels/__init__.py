"""Kernel families. Each is a package ``kernels/<family>/`` holding:

- its configuration: frozen dataclasses of plain scalars (dtype names, tile sizes, flags) that
  are the compile keys, with the sizes they derive (``config.py``);
- its tiling heuristics (``pick``), its limits stated once (``supports(problem) -> reason |
  None``, ``max_rows``), and the configurations presets and CI compile (``preset_configs``,
  ``variants``), re-exported by the package;
- its kernel (``kernel.py``): the CuTe DSL implementation, one class per configuration class,
  listed in ``KERNELS`` (configuration class -> kernel class). The kernel class subclasses its
  configuration and adds ``fake_args()`` (the compile-time arguments) and the ``@cute.jit`` /
  ``@cute.kernel`` methods. Only compiling imports it, and with it the DSL.

Configurations import neither the DSL nor torch, so a process that runs ahead-of-time or cached
kernels never loads the compiler. Shared pieces: ``common`` (plain: dtype widths, the
shared-memory plan), ``dsl`` and ``ptx`` (device side).
"""
