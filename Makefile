# owsync: developer and packaging entry points.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DESTDIR ?=
PREFIX ?= /usr

.PHONY: all venv test lint format demo bench install clean

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

install:
	$(PYTHON) -m pip install --no-deps --no-compile --ignore-installed --root="$(if $(DESTDIR),$(DESTDIR),/)" --prefix="$(PREFIX)" .
	install -d "$(DESTDIR)/etc/init.d" "$(DESTDIR)/etc/config" "$(DESTDIR)/lib/upgrade/keep.d"
	install -m 0755 files/etc/init.d/owsync "$(DESTDIR)/etc/init.d/owsync"
	install -d "$(DESTDIR)/usr/libexec/rpcd"
	install -m 0755 files/usr/libexec/rpcd/owsync.key "$(DESTDIR)/usr/libexec/rpcd/owsync.key"
	install -m 0600 files/etc/config/owsync "$(DESTDIR)/etc/config/owsync"
	install -m 0644 files/lib/upgrade/keep.d/owsync "$(DESTDIR)/lib/upgrade/keep.d/owsync"
	install -d "$(DESTDIR)/etc/hotplug.d/keepalived"
	install -m 0644 files/etc/hotplug.d/keepalived/100-owsync "$(DESTDIR)/etc/hotplug.d/keepalived/"
	install -d "$(DESTDIR)/lib/systemd/system"
	install -m 0644 files/lib/systemd/system/owsync.service "$(DESTDIR)/lib/systemd/system/"
	# luci-app-owsync, laid out as the LuCI feed's luci.mk installs it
	install -d "$(DESTDIR)/www"
	cp -R luci/luci-app-owsync/htdocs/. "$(DESTDIR)/www/"
	cp -R luci/luci-app-owsync/root/. "$(DESTDIR)/"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
