# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The packages: every top-level folder with an __init__.py but these (setup.py finds the same).
PACKAGES := $(filter-out tests bench examples build,$(patsubst %/__init__.py,%,$(wildcard */__init__.py)))
DIST := build/dist
SMOKE_VENV := build/smoke-venv

.PHONY: run test lint typecheck package kcat chromium unit clean

$(STAMP): pyproject.toml setup.py store/_speedups.c processing/_speedups.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,compression]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/clickstream.py

test: lint typecheck package kcat chromium unit

# The broker's client tests drive Debian's kcat; they fail with a clear message when it is
# missing, so a failed install here is reported but does not stop the run.
kcat:
	@command -v kcat >/dev/null || (apt-get update && apt-get install -y kcat) \
		|| echo "warning: could not install kcat (apt-get install kcat); the kcat tests will fail"

# The browser test of `headwater ui` drives Debian's headless Chromium through its
# chromedriver; it is skipped, saying why, when they are missing.
chromium:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) \
		|| (apt-get update && apt-get install -y chromium chromium-driver) \
		|| echo "warning: could not install chromium and chromium-driver (apt-get install chromium chromium-driver); the browser test of headwater ui will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot see through setuptools' editable-install import hook, so it reads the
# packages through a tree of links named as they are imported.
typecheck: $(STAMP)
	@rm -rf $(VENV)/typecheck && mkdir -p $(VENV)/typecheck/headwater
	@for p in $(PACKAGES); do ln -s "$(CURDIR)/$$p" $(VENV)/typecheck/headwater/$$p; done
	cd $(VENV)/typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml $(foreach p,$(PACKAGES),-p headwater.$(p))

# What `pip install headwater` gives a user, checked as they get it: the sdist, the wheel
# built from it (both in isolated build envs), the wheel installed with its dependencies
# into a clean venv (from pip's cache and the package registry; no bytecode compiled
# ahead, which would double the install's time), and tests/packaging/smoke.py run there
# from outside the tree. Every other test runs on the editable install. Its egg-info is
# removed first: setuptools would take the stale file list into the sdist, hiding a file
# that a fresh clone's build leaves out.
package: $(STAMP)
	@rm -rf $(DIST) $(SMOKE_VENV) *.egg-info
	$(BIN)/python -m build --quiet --outdir $(DIST) .
	$(PYTHON) -m venv --without-pip $(SMOKE_VENV)
	$(BIN)/python -m pip --python $(SMOKE_VENV)/bin/python install --quiet --no-compile \
		--disable-pip-version-check $(DIST)/*.whl
	cd $(SMOKE_VENV) && bin/python -I $(CURDIR)/tests/packaging/smoke.py $(CURDIR)

# Two test processes keep both of CI's cores busy (most tests wait on a subprocess, a
# socket or an fsync); each test file runs whole in one of them, so a file's fixtures are
# built once. TEST_JOBS=0 runs the suite in this process. Hundreds of tests start
# `headwater` or a worker as a subprocess: where the environment sets
# PYTHONDONTWRITEBYTECODE, each start would compile the packages again (0.3 s of CPU), so
# their bytecode is written first.
TEST_JOBS ?= 2
unit: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES) tests >/dev/null
	$(BIN)/pytest -q --numprocesses=$(TEST_JOBS) --dist=loadfile

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis store/*.so
