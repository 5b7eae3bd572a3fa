# owsync: developer and packaging entry points.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DESTDIR ?=
PREFIX ?= /usr

.PHONY: all venv test lint format demo bench install install-luci clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv lint
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy owsync

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" sh scripts/demo.sh

bench: venv
	$(BIN)/python bench/sync_bench.py

# The OpenWrt files are copied as they land on a router from
# openwrt/owsync/files/: the one layout that openwrt/owsync/Makefile and
# scripts/build-packages.sh install too.
install:
	$(PYTHON) -m pip install --no-deps --no-compile --ignore-installed --root="$(if $(DESTDIR),$(DESTDIR),/)" --prefix="$(PREFIX)" .
	install -d "$(DESTDIR)/"
	cp -R openwrt/owsync/files/. "$(DESTDIR)/"
	install -d -m 0700 "$(DESTDIR)/etc/owsync"
	install -d "$(DESTDIR)/lib/systemd/system"
	install -m 0644 files/lib/systemd/system/owsync.service "$(DESTDIR)/lib/systemd/system/"
	$(MAKE) --no-print-directory install-luci

# luci-app-owsync, laid out as the LuCI feed's luci.mk installs it
install-luci:
	install -d "$(DESTDIR)/www"
	cp -R luci/luci-app-owsync/htdocs/. "$(DESTDIR)/www/"
	cp -R luci/luci-app-owsync/root/. "$(DESTDIR)/"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
