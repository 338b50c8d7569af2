# saltseg: the two commands are `make run` and `make test`; both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1

.PHONY: run test lint format install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch and torchvision first, at the versions pinned in pyproject.toml (the one place for pins)
	$(PIP) install -q $$($(PY) -c "import tomllib;d=tomllib.load(open('pyproject.toml','rb'))['project']['dependencies'];print(' '.join(x for x in d if x.split('==')[0] in ('torch','torchvision')))")
	$(PIP) install -q -e ".[dev,crf]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/saltseg demo --out runs/demo

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
