# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The preflight interpreter: torch 2.9 + torch-xla 2.9 (on PyPI; only CUDA builds of torch 2.9
# exist there, so it is about 7 GB). Programs run on the XLA CPU device before any trn1 time.
PREFLIGHT_VENV ?= .preflight-venv
PREFLIGHT_STAMP := $(PREFLIGHT_VENV)/.installed

.PHONY: demo demo-stop demo-clean test bench install clean lock preflight-env

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=lenient
	$(PY) -m pip install -q -c constraints.txt 'torch==2.13.0'  # CPU build from local disk here; generated programs need it
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1; }; } || \
	  echo "bubblewrap not installed: the sandbox uses the strongest level it finds (see README)"; }
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -q shellcheck >/dev/null 2>&1; } || echo "shellcheck not installed: its checks of the trn1 scripts are skipped"
	touch $(STAMP)

install: $(STAMP)

$(PREFLIGHT_STAMP): Makefile
	test -x $(PREFLIGHT_VENV)/bin/python || $(PYTHON) -m venv $(PREFLIGHT_VENV)
	$(PREFLIGHT_VENV)/bin/python -m pip install -q 'torch==2.9.0' 'torch-xla==2.9.0' 'numpy<3'
	touch $(PREFLIGHT_STAMP)

preflight-env: $(PREFLIGHT_STAMP)
	@echo "ANNAPURNA_PREFLIGHT_PYTHON=$(CURDIR)/$(PREFLIGHT_VENV)/bin/python"

demo: $(STAMP) $(PREFLIGHT_STAMP)
	$(PY) -m deployments.demo

demo-stop:
	$(PY) -m deployments.demo --stop

demo-clean:
	rm -rf $(CURDIR)/.demo

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: $(STAMP) $(PREFLIGHT_STAMP)
	@PREFLIGHT_TEST_PYTHON=$(CURDIR)/$(PREFLIGHT_VENV)/bin/python $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The benchmarks quoted in the README; they install the alternatives they compare against.
bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]' --config-settings editable_mode=lenient
	$(PY) bench/listing_throughput.py
	$(PY) bench/pdf_extraction.py

clean:
	rm -rf $(VENV) $(PREFLIGHT_VENV) .pytest_cache

# Rewrite constraints.txt from the working .venv (after `make test` passes on it).
lock: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze | grep -v -E '^-e|annapurna|^#|^torch=='; } > constraints.new && mv constraints.new constraints.txt && touch $(STAMP)
