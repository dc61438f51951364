# Two entry points, each installs what it needs into .venv on first use (only python3 needed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum setup.py | cut -d' ' -f1)

.PHONY: demo test

$(STAMP): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/python -m experiments.train --config=configs/digits_perceiver.py --workdir=workdirs/digits
	$(VENV)/bin/python -m experiments.plot --config=configs/digits_perceiver.py --workdir=workdirs/digits

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 tests
