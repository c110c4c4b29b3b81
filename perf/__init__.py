"""Performance work on cute-kernels: the sweep, its results, plots and probes (not shipped with the
package). Run its scripts from the repository root, e.g. ``python perf/sweep.py ...`` or
``python -m perf.probes.NAME``; perf/NOTES.md describes the layout and the findings."""
