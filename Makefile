# make test   - create .venv if needed, install the pinned host deps, lint, run every host test
#               (firmware on CPython and on the MicroPython unix port, mpy-cross and import checks)
# make demo   - the end-to-end demo on the host (local platform emulator + virtual board)
# make bench  - firmware vs the official SDK against the emulator at several RTTs (bench/results/)
# make lint   - ruff only;  make venv - the environment only;  make clean / distclean
# make package-json - rewrite package.json (mip) after adding or removing a module in firmware/aliyun_iot
# make mip-mpy      - the package precompiled for mip: build/mip/package.json and build/mip/aliyun_iot/*.mpy
# make ota-package VERSION=x [ARGS=--mpy] - the OTA bundle build/ota/app-x.bin; prints size, MD5, SHA-256
# make demo-ota     - an update over the air and a rollback, on the host (emulator + virtual board)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements-dev
PYTEST_ARGS ?=

.PHONY: all venv lint test demo demo-ota ota-package bench package-json mip-mpy clean distclean check-python

all: test

# python3 >= 3.11 is the one prerequisite besides make and git: fail early and say so.
check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found; install Python 3.11 or later (or run: make PYTHON=/path/to/python3.11)" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: Python 3.11 or later is required, $(PYTHON) is $$($(PYTHON) -V 2>&1);" \
	       "run: make PYTHON=/path/to/python3.11" >&2; \
	  exit 1; }

# Re-installs only when requirements-dev.txt is newer than the stamp.
$(STAMP): requirements-dev.txt constraints-dev.txt | check-python
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "error: $(VENV) was made with $$($(PY) -V 2>&1); remove it (make distclean) and retry" >&2; \
	  exit 1; fi
	@[ -x $(PY) ] || { echo "creating $(VENV) with $$($(PYTHON) -V)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints-dev.txt
	@touch $@

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check firmware host_tests tools

test: venv lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m tools.demo

demo-ota: venv
	$(PY) -m tools.demo_ota

ota-package: venv
	@[ -n "$(VERSION)" ] || { echo "error: give VERSION=, e.g. make ota-package VERSION=1.2.0" >&2; exit 1; }
	$(PY) -m tools.ota_package --version "$(VERSION)" $(ARGS)

bench: venv
	$(PY) -m tools.bench

package-json: venv
	$(PY) -m tools.mip_package --write

mip-mpy: venv
	$(PY) -m tools.mip_package --mpy build/mip

clean:
	rm -rf build .pytest_cache .ruff_cache
	find firmware host_tests tools -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# Real-board targets (flash, deploy, provision, backup, restore, status): see tools/tools.mk.
-include tools/tools.mk
