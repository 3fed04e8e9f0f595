# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python >= 3.10:
#   make demo   - local venv, synthetic data, train, export, edge daemon -> MQTT -> algan-alarms
#   make test   - local venv and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.algan-installed
# the CPU build of torch first, so that the package's torch>=2.13 is already satisfied (no multi-GB CUDA build)
TORCH ?= torch==2.13.0

# the Triton tests' server: PyTriton (tritonserver + its Python backend) in a venv of its own, made from the system
# Python 3.11 (the Python backend's stub links the system libpython); versions in tools/pytriton-requirements.txt
TRITON_PYTHON ?= /usr/bin/python3.11
TRITON_VENV ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.algan-installed

.PHONY: venv triton-venv demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "need Python >= 3.10 with venv support: sudo apt-get install python3-venv (or set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[train,broker,dev,triton]'
	touch $(STAMP)

venv: $(STAMP)

$(TRITON_STAMP): tools/pytriton-requirements.txt
	@test -x $(TRITON_PYTHON) || { echo "no $(TRITON_PYTHON): sudo apt-get install python3.11-venv (or set TRITON_PYTHON=...)"; exit 1; }
	$(TRITON_PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -r tools/pytriton-requirements.txt
	$(TRITON_VENV)/bin/python -c 'import pytriton.triton, onnxruntime'
	touch $@

triton-venv: $(TRITON_STAMP)

demo: venv
	$(BIN)/algan-demo --out demo-out

# the Triton tests run where the system Python 3.11 exists (they skip otherwise, and fail under .ci/run); a venv
# made before the triton extra joined the install gets tritonclient here
test: venv
	@$(BIN)/python -c 'import tritonclient.grpc' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[triton]'
	@if [ -x $(TRITON_PYTHON) ]; then $(MAKE) --no-print-directory triton-venv; \
	else echo "note: no $(TRITON_PYTHON), so no PyTriton venv: the Triton tests skip (TRITON_PYTHON=... to set one)"; fi
	ALGAN_PYTRITON_PYTHON=$${ALGAN_PYTRITON_PYTHON:-$(abspath $(TRITON_VENV))/bin/python} $(BIN)/python -m pytest

# mypy reads the TensorRT API from tensorrt-stubs, installed beside (not into) the venv: the package's own
# dependency on tensorrt would make `import tensorrt` succeed on machines without TensorRT; its stubgen output
# needs two mechanical repairs (tools/fix_trt_stubs.py) before mypy can parse it
TRT_STUBS := .mypy-stubs/tensorrt/__init__.pyi
$(TRT_STUBS): | venv
	$(BIN)/python -m pip install -q --no-deps --target .mypy-stubs 'tensorrt-stubs==10.13.0.35.1'
	$(BIN)/python tools/fix_trt_stubs.py .mypy-stubs

lint: venv $(TRT_STUBS)
	$(BIN)/ruff check algan tests benchmarks tools
	$(BIN)/mypy

# the full size of every benchmark (minutes each; CI runs their --smoke sizes in tests/test_benchmarks_smoke.py)
bench: venv
	@set -e; for f in benchmarks/[!_]*.py; do \
	  echo "== $$f"; PYTHONPATH=$(CURDIR) $(BIN)/python $$f; \
	done

clean:
	rm -rf demo-out .pytest_cache
