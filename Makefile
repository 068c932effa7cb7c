# The two commands of the README. Each sets up everything on a fresh machine (a virtual
# environment in $(VENV) with the CPU build of torch, then qengine with its test extras).
#   make demo   quantize a small diffusers model, sample with it, compare with 16-bit
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build installs offline; on a GPU machine pass TORCH= to keep the CUDA torch you have.
TORCH ?= torch==2.13.0

.PHONY: demo test install

install: $(VENV)/.qengine-installed

$(VENV)/.qengine-installed: pyproject.toml $(wildcard setup.py)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(PY) examples/quickstart.py

# pytest's exit code 5 (no tests collected) counts as a failure.
test: install
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
