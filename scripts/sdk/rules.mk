# owsync's stand-in for the OpenWrt SDK's rules.mk (scripts/build-packages.sh):
# the names a package recipe uses, with the SDK's values. Not OpenWrt's file.

INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
LN:=ln -sf
FIND:=find
SED:=sed -i -e
XARGS:=xargs -r

# set by build-packages.sh: where each package's tree and metadata go
STAGE?=$(error STAGE is not set)
BUILD_DIR?=$(STAGE)/build
