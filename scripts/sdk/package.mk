# owsync's stand-in for the SDK's include/package.mk (scripts/build-packages.sh).
# BuildPackage evaluates a recipe's Package/NAME definition as the SDK does,
# runs its install into $(STAGE)/NAME/root, and writes the metadata that the
# SDK's package-pack.mk turns into control data (meta.sh, description,
# conffiles, and the recipe's own preinst/postinst/prerm/postrm); the packing
# itself (ipkg-build, apk mkpkg) is build-packages.sh's. Not OpenWrt's file.

PKG_BUILD_DIR?=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR?=$(PKG_BUILD_DIR)/ipkg-install

PACKAGES_BUILT:=
all: stage

define Package/Default
  SECTION:=opt
  CATEGORY:=Extra packages
  SUBMENU:=
  TITLE:=
  URL:=
  DEPENDS:=
  EXTRA_DEPENDS:=
  CONFLICTS:=
  PROVIDES:=
  USERID:=
  MENU:=
  PKGARCH:=$(ARCH_PACKAGES)
  MAINTAINER:=$(PKG_MAINTAINER)
  LICENSE:=$(PKG_LICENSE)
  LICENSE_FILES:=$(PKG_LICENSE_FILES)
endef

# every package depends on libc, as the SDK's PKG_FIXUP_DEPENDS makes it; a
# conditional dependency (+SYMBOL:pkg) counts as met, as with the defaults
shim_depends=libc $(filter-out libc,$(foreach d,$(patsubst +%,%,$(filter-out @%,$(1))),$(lastword $(subst :, ,$(d)))))

define BuildPackage
  $(eval $(Package/Default))
  $(eval $(Package/$(1)))
  PACKAGES_BUILT+=$(1)
  META_$(1):=name='$(1)' pkg_version='$(PKG_VERSION)' pkg_release='$(PKG_RELEASE)' \
	section='$(SECTION)' arch='$(PKGARCH)' license='$(LICENSE)' \
	license_files='$(LICENSE_FILES)' maintainer='$(MAINTAINER)' url='$(URL)' \
	source_name='$(PKG_NAME)' title='$(TITLE)' \
	depends='$(strip $(call shim_depends,$(DEPENDS)))' provides='$(PROVIDES)' \
	conflicts='$(CONFLICTS)'
  stage: stage-$(1)
  # make expands a whole recipe before it runs it: the directory first
  stage-$(1): $(SHIM_BUILD_STAMP)
	$$(shell rm -rf $(STAGE)/$(1); mkdir -p $(STAGE)/$(1)/root)
	$$(call Package/$(1)/install,$(STAGE)/$(1)/root)
	printf '%s\n' "$$(META_$(1))" > $(STAGE)/$(1)/meta.sh
	$$(file >$(STAGE)/$(1)/description,$$(Package/$(1)/description))
	$$(if $$(Package/$(1)/conffiles),$$(file >$(STAGE)/$(1)/conffiles,$$(strip $$(Package/$(1)/conffiles))))
	$$(foreach s,preinst postinst prerm postrm,$$(if $$(Package/$(1)/$$(s)),$$(file >$(STAGE)/$(1)/$$(s),$$(Package/$(1)/$$(s)))))
endef

.PHONY: all stage
