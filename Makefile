# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := store groups broker processing cli

.PHONY: run test lint typecheck kcat unit clean

$(STAMP): pyproject.toml setup.py store/_speedups.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,compression]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/clickstream.py

test: lint typecheck kcat unit

# The broker's client tests drive Debian's kcat; they fail with a clear message when it is
# missing, so a failed install here is reported but does not stop the run.
kcat:
	@command -v kcat >/dev/null || (apt-get update && apt-get install -y kcat) \
		|| echo "warning: could not install kcat (apt-get install kcat); the kcat tests will fail"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot see through setuptools' editable-install import hook, so it reads the
# packages through a tree of links named as they are imported.
typecheck: $(STAMP)
	@rm -rf $(VENV)/typecheck && mkdir -p $(VENV)/typecheck/headwater
	@for p in $(PACKAGES); do ln -s "$(CURDIR)/$$p" $(VENV)/typecheck/headwater/$$p; done
	cd $(VENV)/typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml $(foreach p,$(PACKAGES),-p headwater.$(p))

unit: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis store/*.so
