# owsync's stand-in for the LuCI feed's luci.mk (scripts/build-packages.sh):
# htdocs/ -> /www, root/ -> /, ucode/ -> /usr/share/ucode/luci; the version
# from the app directory's last git commit; the postinst that runs the
# app's uci-defaults and drops LuCI's caches. Not LuCI's file.

LUCI_NAME?=$(notdir ${CURDIR})
PKG_NAME?=$(LUCI_NAME)
PKG_VERSION?=$(strip $(shell set -- $$(git -C ${CURDIR} log -1 --format='%ct %h' -- . 2>/dev/null); \
	[ -n "$$1" ] && printf '%s.%05d~%s' "$$(date -u -d @$$1 +%y.%j)" "$$(($$1 % 86400))" "$$2" || echo 0))
PKG_RELEASE?=1
LUCI_DEFAULTS:=$(notdir $(wildcard ${CURDIR}/root/etc/uci-defaults/*))
SHIM_BUILD_STAMP:=

include $(INCLUDE_DIR)/package.mk

define Package/$(PKG_NAME)
  SECTION:=luci
  CATEGORY:=LuCI
  SUBMENU:=3. Applications
  TITLE:=$(if $(LUCI_TITLE),$(LUCI_TITLE),LuCI $(LUCI_NAME))
  DEPENDS:=$(LUCI_DEPENDS)
  $(if $(LUCI_PKGARCH),PKGARCH:=$(LUCI_PKGARCH))
endef

define Package/$(PKG_NAME)/description
$(if $(LUCI_DESCRIPTION),$(LUCI_DESCRIPTION),$(LUCI_TITLE))
endef

define Package/$(PKG_NAME)/install
	if [ -d ${CURDIR}/htdocs ]; then $(INSTALL_DIR) $(1)/www; cp -pR ${CURDIR}/htdocs/* $(1)/www/; fi
	if [ -d ${CURDIR}/root ]; then $(INSTALL_DIR) $(1)/; cp -pR ${CURDIR}/root/* $(1)/; fi
	if [ -d ${CURDIR}/ucode ]; then $(INSTALL_DIR) $(1)/usr/share/ucode/luci; cp -pR ${CURDIR}/ucode/* $(1)/usr/share/ucode/luci/; fi
endef

define Package/$(PKG_NAME)/postinst
#!/bin/sh
[ -n "$${IPKG_INSTROOT}" ] || {$(foreach script,$(LUCI_DEFAULTS),
	(. /etc/uci-defaults/$(script)) && rm -f /etc/uci-defaults/$(script))
	rm -f /tmp/luci-indexcache.*
	rm -rf /tmp/luci-modulecache/
	killall -HUP rpcd 2>/dev/null
	exit 0
}
endef

$(eval $(call BuildPackage,$(PKG_NAME)))
