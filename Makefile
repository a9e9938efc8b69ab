# Two commands matter: `make up` (the local platform) and `make test` (the whole suite).
# Each sets itself up from the lock on a machine that has only Python 3.11.
PYTHON ?= python3.11
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --no-sync
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_INDEX_URL := https://pypi.org/simple

.PHONY: setup up down status test lint typecheck browser unit bench docs clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

setup: $(VENV)/.synced

## The local platform: bring it up, train and serve the first model, print what to do next.
up: setup
	$(VENV)/bin/mlops local up --bootstrap

down: setup
	$(VENV)/bin/mlops local down

status: setup
	$(VENV)/bin/mlops status

## The whole test suite, with lint and type checks first.
test: setup lint typecheck browser unit

## The console's browser test (tests/test_console_browser.py) drives Debian's chromium through its
## chromium-driver (the same version, packaged together). Installed here when missing and running as
## root; otherwise a clear message, and the test itself fails (it is never skipped) saying the same.
BROWSER_PACKAGES := chromium chromium-driver
CHROMIUM ?= chromium
CHROMEDRIVER ?= chromedriver
browser:
	@if command -v $(CHROMIUM) >/dev/null 2>&1 && command -v $(CHROMEDRIVER) >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(BROWSER_PACKAGES) for the console's browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
			{ apt-get update -qq && apt-get install -y -qq $(BROWSER_PACKAGES); }; \
	else \
		echo "make test needs $(BROWSER_PACKAGES) for the console's browser test: run" >&2; \
		echo "  sudo apt-get install -y $(BROWSER_PACKAGES)    (Debian/Ubuntu; as root, make test does it)" >&2; \
		exit 1; \
	fi

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: setup
	$(RUN) mypy .

unit: setup
	$(RUN) pytest

## The settings tables of README.md and docs/contracts.md, regenerated from the settings table
## (workloads/serve/deployer/settings_table.py); tests/test_settings_table.py fails when they are stale.
docs: setup
	$(RUN) python -m tools.settings_docs

## Benchmarks (not part of `make test`). MLflow, the serving anchor, goes into its own venv under
## bench/.out/ (built from uv.lock's bench group by bench/serve_bench.py), never into .venv.
bench: setup
	$(RUN) python bench/run.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
