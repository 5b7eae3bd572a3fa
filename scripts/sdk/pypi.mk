# owsync's stand-in for the packages feed's lang/python/pypi.mk
# (scripts/build-packages.sh): the source is PYPI_NAME's sdist, which
# build-packages.sh takes from a local file and checks against PKG_HASH.
PKG_BUILD_DIR?=$(BUILD_DIR)/pypi/$(PYPI_NAME)-$(PKG_VERSION)
