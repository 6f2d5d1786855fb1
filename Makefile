# One-command entry points. `make all` and `make test` create the virtual environment
# from requirements.lock on first use, so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: all demo setup test lint dryrun lock clean-outputs faults

all: $(STAMP)
	snakemake --cores $(CORES) --workflow-profile pipeline/profiles/default all

# The whole path on 10 glosses (pipeline/demo.yaml over params.yaml; outputs in data/demo), ending
# with a prediction on a held-out clip and its pose overlay; prints the time it took.
# DEMO_CONFIG: the config files merged over params.yaml (the pipeline test adds one that shrinks it).
DEMO_CORES ?= 2
DEMO_CONFIG ?= pipeline/demo.yaml
demo: SHELL := /bin/bash
demo: $(STAMP)
	@TIMEFORMAT='make demo: %0R s wall clock, CPU %0U s user + %0S s system'; time { \
	  snakemake all --cores $(DEMO_CORES) --workflow-profile pipeline/profiles/default \
	    --configfile $(DEMO_CONFIG) && \
	  echo && cat data/demo/example/example.txt data/demo/example/prediction.txt; }

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/python -m pip check
	touch $@

test: $(STAMP)
	python -m pytest

lint: $(STAMP)
	snakemake --lint

dryrun: $(STAMP)
	snakemake -n all

# Inject every fault kind 10 times; the table goes into docs/reliability.md (## Fault injection).
faults: $(STAMP)
	python -m bench.faults --repeats 10 --write-readme

# Re-resolve the pinned versions from pyproject.toml into requirements.lock.
lock:
	rm -rf /tmp/sl-lock-venv && $(PYTHON) -m venv /tmp/sl-lock-venv
	/tmp/sl-lock-venv/bin/pip install --quiet ".[pipeline,test]"
	{ sed -n '1,3p' requirements.lock; /tmp/sl-lock-venv/bin/pip freeze --all --exclude pip --exclude signlang-pipeline \
	  | sed -e 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean-outputs:
	rm -rf data metrics plots logs benchmarks .snakemake
