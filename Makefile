# The project's two commands (CONTRACT §1). Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The browser tests drive Debian's Chromium (Playwright cannot fetch its own browser here).
CHROMIUM := /usr/bin/chromium
# The DICOM tests use dcmtk's echoscu, storescu and storescp as third-party peers.
DCMTK    := /usr/bin/storescu
# The Slurm tests start a real single-node cluster (slurmctld, slurmd, munge).
SLURM    := /usr/sbin/slurmctld
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT      := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test lint bench clean bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,test]'
	touch $(STAMP)

$(CHROMIUM):
	$(APT) install -y chromium || ($(APT) update && $(APT) install -y chromium)

$(DCMTK):
	$(APT) install -y dcmtk || ($(APT) update && $(APT) install -y dcmtk)

$(SLURM):
	$(APT) install -y slurm-wlm munge || ($(APT) update && $(APT) install -y slurm-wlm munge)

# pip compiles an installed package's modules once; an editable install runs them from src/,
# and where PYTHONDONTWRITEBYTECODE is set (this machine sets it) every process compiled all
# of them again: 50 ms of each command's start.  Quick when nothing changed.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src

demo: $(STAMP) bytecode
	$(BIN)/python scripts/demo.py $(if $(SERVE),--serve)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) $(CHROMIUM) $(DCMTK) $(SLURM) lint bytecode
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

# Not part of test: needs Debian's nginx, curl, aria2c and dcmtk, several GB of disk and minutes.
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo-output demo-archive test-output
