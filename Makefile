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

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" sh scripts/demo.sh

bench: venv
	$(BIN)/python bench/sync_bench.py

install:
	$(PYTHON) -m pip install --no-deps --no-compile --ignore-installed --root="$(if $(DESTDIR),$(DESTDIR),/)" --prefix="$(PREFIX)" .
	install -d "$(DESTDIR)/etc/init.d" "$(DESTDIR)/etc/config" "$(DESTDIR)/usr/share/rpcd/acl.d"
	install -m 0755 files/etc/init.d/owsync "$(DESTDIR)/etc/init.d/owsync"
	install -d "$(DESTDIR)/usr/libexec/rpcd"
	install -m 0755 files/usr/libexec/rpcd/owsync.key "$(DESTDIR)/usr/libexec/rpcd/owsync.key"
	install -m 0600 files/etc/config/owsync "$(DESTDIR)/etc/config/owsync"
	install -m 0644 files/usr/share/rpcd/acl.d/luci-app-owsync.json "$(DESTDIR)/usr/share/rpcd/acl.d/"
	install -d "$(DESTDIR)/lib/systemd/system"
	install -m 0644 files/lib/systemd/system/owsync.service "$(DESTDIR)/lib/systemd/system/"
	if [ -d luci/luci-app-owsync/htdocs ]; then \
		install -d "$(DESTDIR)/www" && cp -R luci/luci-app-owsync/htdocs/. "$(DESTDIR)/www/"; \
		install -d "$(DESTDIR)/usr/share/luci/menu.d" && \
		install -m 0644 luci/luci-app-owsync/root/usr/share/luci/menu.d/*.json "$(DESTDIR)/usr/share/luci/menu.d/"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
