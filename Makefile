# The two commands of the README. Each sets up everything on a fresh machine (a virtual
# environment in $(VENV) with the CPU build of torch, then qengine with its test extras).
#   make demo        calibrate + quantize a shipped trained model, sample a grid with both, compare
#   make test        run the test suite
#   make quickstart  quantize a small random-weight SD pipeline with every preset
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build installs offline; on a GPU machine pass TORCH= to keep the CUDA torch you have.
TORCH ?= torch==2.13.0

.PHONY: demo quickstart test install

install: $(VENV)/.qengine-installed

$(VENV)/.qengine-installed: pyproject.toml $(wildcard setup.py)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(PY) examples/fashion_mnist.py --out fashion_mnist_unet_w8a8-int8.png

quickstart: install
	$(PY) examples/quickstart.py

# pytest's exit code 5 (no tests collected) counts as a failure.
test: install
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
