# Two entry points, each installs what it needs into .venv on first use (only python3 needed):
# `make demo` the library with its `demo` extra, `make test` with its `test` extra. A stamp
# per extra carries setup.py's checksum, so a changed setup.py installs again.
PYTHON ?= python3
VENV := .venv
SUM := $(shell cksum setup.py | cut -d' ' -f1)

.PHONY: demo test

$(VENV)/.installed-%-$(SUM): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[$*]'
	rm -f $(VENV)/.installed-$*-*
	touch $@

demo: $(VENV)/.installed-demo-$(SUM)
	$(VENV)/bin/python -m experiments.train --config=configs/digits_perceiver.py --workdir=workdirs/digits
	$(VENV)/bin/python -m experiments.plot --config=configs/digits_perceiver.py --workdir=workdirs/digits

test: $(VENV)/.installed-test-$(SUM)
	$(VENV)/bin/python -m pytest -q -n 2 tests
