# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine: they create a
# virtual environment in .venv (VENV=...) and install the package there with its dependencies.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The GPU machine brings its own torch and the CuTe DSL (the device bundle): its targets use the
# interpreter on PATH, with no install step.
GPU_PYTHON ?= python3
# pip options for the install, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu
# --extra-index-url https://pypi.org/simple" for a CPU-only torch on a build-only machine.
PIP_ARGS ?=

.PHONY: install demo test test-gpu sanitize sweep tuning notebooks

$(PYTHON):
	@echo "make: creating the virtual environment $(VENV)"
	python3 -m venv $(VENV)

install: $(PYTHON)
	@echo "make: installing cute-kernels (editable) and its dependencies into $(VENV);"
	@echo "      without a torch there, pip fetches one: a CUDA build is several GB, see README 'Install'"
	$(PYTHON) -m pip install $(PIP_ARGS) -e ".[test]"
	@$(PYTHON) -c "import torch, cute_kernels; print(f'make: cute-kernels {cute_kernels.__version__}, torch {torch.__version__}')"

# No GPU: compile the default preset's kernels for sm_90a and report times. GPU: run, check and time them.
demo: install
	$(PYTHON) -m cute_kernels.cli demo

# The CPU suite (CI): the spec, the bridge, the cache, and every kernel compiled for sm_90a and sm_100a.
test: install
	$(PYTHON) -m pytest -q -m "not gpu"

# On the GPU machine (no install step there: the CuTe DSL comes from the device bundle).
test-gpu:
	$(GPU_PYTHON) -m pytest -q -m gpu

# compute-sanitizer over every kernel code path; logs under perf/results/h100/sanitizer/.
# API errors are not reported: the driver-symbol probes of cuda-python fail by design.
SANITIZER_DIR ?= perf/results/h100/sanitizer
sanitize:
	mkdir -p $(SANITIZER_DIR)
	for tool in memcheck racecheck synccheck; do \
	  compute-sanitizer --tool $$tool --report-api-errors no --error-exitcode 1 $(GPU_PYTHON) tests/sanitize_workload.py \
	    > $(SANITIZER_DIR)/$$tool.log 2>&1 || { tail -20 $(SANITIZER_DIR)/$$tool.log; exit 1; }; \
	  tail -2 $(SANITIZER_DIR)/$$tool.log; \
	done

# On the GPU machine: the performance sweep of each op in OPS into RESULTS. One op per device call
# keeps each under its 10 minutes, e.g. `make sweep OPS=router_gemm RESULTS=$OUT` (perf/NOTES.md).
RESULTS ?= perf/results/h100
OPS ?= router_gemm norm_router_gemm silu_mul_quant_fp8 pack_topk
sweep:
	status=0; for op in $(OPS); do $(GPU_PYTHON) perf/sweep.py --op $$op --out $(RESULTS) || status=1; done; exit $$status

# No GPU: the dispatcher's tuning table (dispatch/tuning.json) from the router sweeps in RESULTS.
tuning: install
	$(PYTHON) perf/sweep.py --write-tuning $(wildcard $(RESULTS)/router_gemm.json $(RESULTS)/norm_router_gemm.json)

# No GPU: re-execute the notebooks from the committed results, outputs saved in place; from
# unchanged results the files come out the same (perf/notebooks.py).
notebooks: install
	$(PYTHON) -m pip install -q -e ".[perf]"
	$(PYTHON) -m perf.notebooks
