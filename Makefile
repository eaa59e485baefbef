# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build that installs from local disk here; GPU users: make TORCH="torch --index-url ..."
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow browser speech clean

demo: $(VENV)/.installed
	$(BIN)/smalto demo --out demo

test: $(VENV)/.installed-test browser speech
	$(BIN)/python -m pytest

# Checks too slow for every run (compiling a training step): run before changing what they cover.
test-slow: $(VENV)/.installed-test speech
	$(BIN)/python -m pytest -m slow

# The web UI test drives Debian's Chromium through its ChromeDriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

# Spoken captions come from Debian's espeak-ng, a formant synthesiser: no weights to download.
speech:
	@command -v espeak-ng >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq espeak-ng; }

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) demo .pytest_cache
