# Two entry points, each installs what it needs into .venv on first use (only python3 needed):
# `make demo` the library with its `demo` extra, `make test` with its `test` extra. A stamp
# per extra carries setup.py's and this file's checksum, so a change installs again.
PYTHON ?= python3
VENV := .venv
SUM := $(shell cksum setup.py Makefile | cksum | cut -d' ' -f1)
# krasserm/perceiver-io, the peer of the krasserm conversion tests (tests/krasserm_peer.py):
# its wheel says Python < 3.11 and pins old training libraries, none of which its models need.
KRASSERM := perceiver-io==0.11.0 fairscale==0.4.13

.PHONY: demo test

$(VENV)/.installed-%-$(SUM): setup.py Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[$*]'
	if [ $* = test ]; then $(VENV)/bin/python -m pip install --quiet --no-deps \
	  --ignore-requires-python $(KRASSERM); fi
	rm -f $(VENV)/.installed-$*-*
	touch $@

demo: $(VENV)/.installed-demo-$(SUM)
	$(VENV)/bin/python -m experiments.train --config=configs/digits_perceiver.py --workdir=workdirs/digits
	$(VENV)/bin/python -m experiments.plot --config=configs/digits_perceiver.py --workdir=workdirs/digits

test: $(VENV)/.installed-test-$(SUM)
	$(VENV)/bin/python -m pytest -q -n 2 tests
