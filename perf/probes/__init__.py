"""One-off GPU probes of kernel configs (their logs: perf/results/h100/experiments/). Run from the
repository root: ``python -m perf.probes.NAME [args]``."""
