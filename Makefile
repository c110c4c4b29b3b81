# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q -e ".[test]"

.PHONY: install demo test test-gpu sanitize bench

install:
	$(PIP_INSTALL)

# No GPU: compile the default preset's kernels for sm_90a and report times. GPU: run and time them.
demo: install
	$(PYTHON) -m cute_kernels.cli demo

# The CPU suite (CI): the spec, the bridge, the cache, and every kernel compiled for sm_90a and sm_100a.
test: install
	$(PYTHON) -m pytest -q -m "not gpu"

# On the GPU machine (no install step there: the CuTe DSL comes from the device bundle).
test-gpu:
	$(PYTHON) -m pytest -q -m gpu

# compute-sanitizer over every kernel code path; logs under perf/results/h100/sanitizer/.
# API errors are not reported: the driver-symbol probes of cuda-python fail by design.
SANITIZER_DIR ?= perf/results/h100/sanitizer
sanitize:
	mkdir -p $(SANITIZER_DIR)
	for tool in memcheck racecheck synccheck; do \
	  compute-sanitizer --tool $$tool --report-api-errors no --error-exitcode 1 $(PYTHON) tests/sanitize_workload.py \
	    > $(SANITIZER_DIR)/$$tool.log 2>&1 || { tail -20 $(SANITIZER_DIR)/$$tool.log; exit 1; }; \
	  tail -2 $(SANITIZER_DIR)/$$tool.log; \
	done

bench:
	$(PYTHON) perf/bench_pack_topk.py --out perf/results/h100
