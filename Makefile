# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
LAUNCH1 := $(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: setup data demo test clean gpu-wheels gpu-data skew

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $@

data:
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' once"; exit 1; fi; \
	fi

demo: setup
	$(LAUNCH1) launch/train.py --config configs/demo.yaml

# Every core, one test module per worker, the longest modules first (tests/conftest.py). The
# DeepSpeed CPU op compiles once per venv (a cache shared by checkouts rebuilds it on each switch).
test: setup
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch_extensions $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf runs

# For a lent GPU machine (Python 3.12 with torch/torchvision/accelerate/tensorboard, no index to
# install from): the wheels of what its image lacks, pinned to the versions this venv runs and
# CI tests, and a copy of Fashion-MNIST; both travel as `carry` paths (docs/benchmarks.md,
# "GPU check"). DeepSpeed ships as an sdist: built here into a pure-Python wheel (no ops; it
# needs the venv's torch, hence no build isolation). pydantic-core is the one compiled wheel.
GPU_WHEELS := .gpu-wheels
GPU_DATA   := data/fashion-mnist
GPU_TOP    := deepspeed webdataset submitit
GPU_DEPS   := hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions braceexpand
GPU_TAGS   := --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_17_x86_64 \
              --platform manylinux2014_x86_64 --only-binary=:all:
PINNED      = $(BIN)/python -c 'import sys, importlib.metadata as m; print("\n".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))'

gpu-wheels: | $(STAMP)  # any venv with torch will do: not a reinstall when pyproject.toml is newer
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PINNED) $(GPU_TOP) > $(GPU_WHEELS)/requirements.txt
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(GPU_WHEELS) $$(grep ^deepspeed== $(GPU_WHEELS)/requirements.txt)
	$(BIN)/pip download -q --no-deps $(GPU_TAGS) -d $(GPU_WHEELS) \
	  $$(grep -v ^deepspeed== $(GPU_WHEELS)/requirements.txt) $$($(PINNED) $(GPU_DEPS))
	@ls -1 $(GPU_WHEELS); du -sh $(GPU_WHEELS)

gpu-data: data
	mkdir -p $(GPU_DATA) && cp $(dir $(FMNIST))*-ubyte.gz $(GPU_DATA)/
	@du -sh $(GPU_DATA)

# The GPU machines' versions (torch 2.11, torchvision 0.26, accelerate 1.15 on Python 3.12 there)
# in a second venv: the GPU check's CPU dry run and the model/generation tests under them. Not
# part of CI (several GB: PyPI's torch 2.11 is a CUDA build, run here on the CPU). SKEW_PY is
# the Python 3.12 to build it with (e.g. SKEW_PY=~/.pyenv/versions/3.12.1/bin/python3.12); every
# other package at the version the main venv runs.
SKEW_PY    ?= python3.12
SKEW       := .venv-skew
SKEW_PINS  := torch==2.11.0 torchvision==0.26.0 accelerate==1.15.0
SKEW_REST  := deepspeed transformers webdataset tensorboard submitit numpy pyyaml tqdm matplotlib pytest
SKEW_TESTS := tests/test_models.py tests/test_inr.py tests/test_coords.py tests/test_generation.py \
              tests/test_compilation.py tests/test_host_work.py

$(SKEW)/.installed: | $(STAMP)
	test -x $(SKEW)/bin/python || $(SKEW_PY) -m venv $(SKEW)
	$(SKEW)/bin/pip install -q $(SKEW_PINS) $$($(PINNED) $(SKEW_REST))
	touch $@

skew: $(SKEW)/.installed data
	$(SKEW)/bin/python -c 'import sys, torch, torchvision, accelerate; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "accelerate", accelerate.__version__)'
	PY=$(SKEW)/bin/python WORK=/tmp/gpu_check_skew bash launch/gpu_check.sh --device cpu --quick --out runs/gpu_check_skew
	PYTHONPATH=$(CURDIR) OMP_NUM_THREADS=1 NEUMETA_NO_BAR=1 $(SKEW)/bin/python -m pytest -q -p no:cacheprovider $(SKEW_TESTS)
