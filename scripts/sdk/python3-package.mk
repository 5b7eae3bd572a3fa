# owsync's stand-in for the packages feed's lang/python/python3-package.mk
# (scripts/build-packages.sh). Build: a wheel of PKG_BUILD_DIR's pyproject,
# installed under PKG_INSTALL_DIR with prefix /usr. Py3Package: the recipe's
# Py3Package/NAME/install, the site-packages tree, then byte-compiled in
# place (compileall -b, as the feed does), sources deleted, empty
# directories removed, scripts' shebangs set to /usr/bin/python3; NAME-src
# keeps the sources only. The host's python is the target's here (the
# OpenWrt chroot runs the host's). Not OpenWrt's file.

HOST_PYTHON3_BIN?=python3
PYTHON3_VERSION:=$(shell $(HOST_PYTHON3_BIN) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHON3_PKG_DIR:=/usr/lib/python$(PYTHON3_VERSION)/site-packages
SHIM_BUILD_STAMP:=$(PKG_BUILD_DIR)/.built

# PYTHON3_PKG_BUILD_CFLAGS/LDFLAGS: where a C extension finds its libraries
$(SHIM_BUILD_STAMP):
	rm -rf $(PKG_BUILD_DIR)/openwrt-build $(PKG_INSTALL_DIR)
	cd $(PKG_BUILD_DIR) && CFLAGS="$(PYTHON3_PKG_BUILD_CFLAGS)" LDFLAGS="$(PYTHON3_PKG_BUILD_LDFLAGS)" \
		$(HOST_PYTHON3_BIN) -m build --no-isolation --wheel --outdir openwrt-build . >/dev/null
	$(HOST_PYTHON3_BIN) -m installer --destdir $(PKG_INSTALL_DIR) --prefix /usr --no-compile-bytecode \
		$(PKG_BUILD_DIR)/openwrt-build/*.whl
	touch $@

define Py3Package
  define Package/$(1)-src
    $(call Package/$(1))
    DEPENDS:=
    CONFLICTS:=
    PROVIDES:=
    EXTRA_DEPENDS:=
    TITLE+= (sources)
    USERID:=
    MENU:=
  endef

  define Package/$(1)-src/description
    $$(call Package/$(1)/description)

    This package contains the Python source files for $(1).
  endef

  ifndef Py3Package/$(1)/install
    define Py3Package/$(1)/install
	if [ -d $(PKG_INSTALL_DIR)/usr/bin ]; then \
		$(INSTALL_DIR) $$(1)/usr/bin ; \
		$(CP) $(PKG_INSTALL_DIR)/usr/bin/* $$(1)/usr/bin/ ; \
	fi
    endef
  endif

  define Package/$(1)/install
	$$(call Py3Package/$(1)/install,$$(1))
	$(INSTALL_DIR) $$(1)$(PYTHON3_PKG_DIR)
	$(CP) $(PKG_INSTALL_DIR)$(PYTHON3_PKG_DIR)/. $$(1)$(PYTHON3_PKG_DIR)/
	$(FIND) $$(1) -name '*.exe' -delete
	PYTHONHASHSEED=0 $(HOST_PYTHON3_BIN) -m compileall -q -r 20 -b -d / $$(1)
	$(FIND) $$(1) -type f -name '*.py' -delete
	$(FIND) $$(1) -mindepth 1 -empty -type d -delete
	if [ -d "$$(1)/usr/bin" ]; then \
		sed -i -e '1s,^#!.*python.*,#!/usr/bin/python3,' $$(1)/usr/bin/*; \
	fi
  endef

  define Package/$(1)-src/install
	$$(call Py3Package/$(1)/install,$$(1))
	$(INSTALL_DIR) $$(1)$(PYTHON3_PKG_DIR)
	$(CP) $(PKG_INSTALL_DIR)$(PYTHON3_PKG_DIR)/. $$(1)$(PYTHON3_PKG_DIR)/
	$(FIND) $$(1) -not -type d -not -name '*.py' -delete
	$(FIND) $$(1) -mindepth 1 -empty -type d -delete
  endef
endef
