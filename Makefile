# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q -e ".[test]"

.PHONY: install demo test test-gpu sanitize sweep tuning notebooks

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

# On the GPU machine: the performance sweep of each op in OPS into RESULTS. One op per device call
# keeps each under its 10 minutes, e.g. `make sweep OPS=router_gemm RESULTS=$OUT` (perf/NOTES.md).
RESULTS ?= perf/results/h100
OPS ?= router_gemm norm_router_gemm silu_mul_quant_fp8 pack_topk
sweep:
	status=0; for op in $(OPS); do $(PYTHON) perf/sweep.py --op $$op --out $(RESULTS) || status=1; done; exit $$status

# No GPU: the dispatcher's tuning table (dispatch/tuning.json) from the router sweeps in RESULTS.
tuning:
	$(PYTHON) perf/sweep.py --write-tuning $(wildcard $(RESULTS)/router_gemm.json $(RESULTS)/norm_router.json)

# No GPU: re-execute the notebooks from the committed results, outputs saved in place.
notebooks:
	$(PYTHON) -m pip install -q -e ".[perf]"
	for nb in perf/*.ipynb; do $(PYTHON) -m jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; done
