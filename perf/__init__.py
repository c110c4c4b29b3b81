"""Performance work on cute-kernels (not shipped with the package). Run from the repository root.

Library:
- ``bench``: what an op's benchmark is (``Bench``, ``Impl``, ``Case``) and the timing modes;
- ``benches``: one ``Bench`` per op (``benches/<op>.py``), the registry ``BENCHES``, and
  ``host_overhead`` (eager host cost); ``python -m perf.benches OP [options]`` runs one;
- ``results``: results files read back (point keys, labels, derived fields, older rows);
- ``targets``: the speed targets; ``plots``: figures and tables of results.
Scripts: ``sweep.py`` (time, plot, write the tuning table), ``tune_router_gemm.py`` (router
configs), ``notebooks`` (re-render perf/*.ipynb), ``probes/`` (``python -m perf.probes.NAME``).
perf/NOTES.md holds the findings.
"""
