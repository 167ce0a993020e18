# Fresh machine: `make demo` or `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OCULA := $(VENV)/bin/ocula
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist

# test-min: a second venv at the lower bounds pyproject.toml declares (MIN_VENV=... to put it elsewhere)
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.installed-stamp

.PHONY: install install-min demo test test-fast test-min datasets browsers bench clean fuzz

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

# Every `pkg>=X` of pyproject.toml pinned to `pkg==X` (.ci/min_constraints.py); what pip then chose is kept
# in $(MIN_VENV)/versions.txt. A floor that cannot install here is a floor to raise, not to work around.
$(MIN_STAMP): pyproject.toml .ci/min_constraints.py
	test -x $(MIN_PY) || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q --upgrade pip
	$(MIN_PY) -c "import tomllib" 2>/dev/null || $(MIN_PY) -m pip install -q tomli
	$(MIN_PY) .ci/min_constraints.py pyproject.toml > $(MIN_VENV)/constraints.txt
	$(MIN_PY) -m pip install -q -c $(MIN_VENV)/constraints.txt -e ".[all,test]"
	$(MIN_PY) -m pip list --format=freeze > $(MIN_VENV)/versions.txt
	touch $(MIN_STAMP)

install-min: $(MIN_STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when we may install it;
# otherwise ocula looks in $$OCULA_DATA and ~/.cache/ocula, or downloads it (with checksums).
datasets:
	@test -d $(FMNIST) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; } || \
	  echo "note: Debian's dataset-fashion-mnist is not installed; ocula will look elsewhere"

# The page served by `ocula serve` is tested in Debian's headless Chromium (driven by Selenium);
# without it that test is skipped and counted.
browsers:
	@{ test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  >/dev/null 2>&1; } || echo "note: chromium/chromium-driver are not installed; the browser test will be skipped"

demo: install datasets
	$(OCULA) train fashion-mnist --recipe fmnist-fast --epochs 3 --out runs/demo-fmnist
	$(OCULA) evaluate runs/demo-fmnist fashion-mnist --explain-errors 16
	$(OCULA) datasets export fashion-mnist runs/demo-samples --split test --limit 12
	$(OCULA) predict runs/demo-fmnist runs/demo-samples --topk 3
	-$(OCULA) export runs/demo-fmnist --int8  # a failed gate still shows, in the report
	$(OCULA) report runs/demo-fmnist

# One pytest-xdist worker per core of the CI machine (2), whole test files per worker (their fixtures are
# module-wide), in collection order (--no-loadscope-reorder: the longest files first, tests/conftest.py). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: install datasets browsers
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The quick subset for the edit-test loop: no test marked slow (training runs, real weights) or dist
# (several torch.distributed processes); stops at the first failure.
test-fast: install
	$(PY) -m pytest -q -x -p no:cacheprovider -m "not slow and not dist" tests

# The whole suite at the lower bounds of every dependency (CI: .ci/run-min); the slowest tests are listed.
test-min: install-min datasets browsers
	@grep -iE "^(torch|torchvision|timm|numpy|pillow|safetensors|onnx|onnxruntime|onnxscript|fastapi|pydantic)==" \
	  $(MIN_VENV)/versions.txt | tr '\n' ' '; echo
	$(MIN_PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests

# Longer fuzzing than `make test` runs: 5,000 examples per property, schemathesis 300 per operation and
# mode, then coverage-guided atheris on the decoders where its wheel installs (docs/bench/reliability.md).
FUZZ_EXAMPLES ?= 5000
fuzz: install
	OCULA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py
	OCULA_SCHEMATHESIS_EXAMPLES=300 $(PY) -m pytest -q -p no:cacheprovider tests/test_serve_schemathesis.py
	@if $(PY) -c "import atheris" 2>/dev/null; then $(PY) bench/fuzz_atheris.py --runs 20000; \
	  else echo "note: atheris is not installed; coverage-guided fuzzing skipped"; fi

bench: install datasets
	@echo "see bench/README.md: each script prints its command, machine and figures"

clean:
	rm -rf $(VENV) $(MIN_VENV) runs .pytest_cache
