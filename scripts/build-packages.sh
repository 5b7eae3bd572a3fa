#!/usr/bin/env bash
# SC2016: the package scripts are written literally; SC2154: name, arch,
# section... come from each package's meta.sh (scripts/sdk/package.mk)
# shellcheck disable=SC2016,SC2154
# Build owsync, python3-pyuci and luci-app-owsync as OpenWrt packages: .ipk
# (OpenWrt 24.10, opkg) and .apk (25.12, apk), from their recipes in this
# tree (openwrt/owsync, openwrt/python-pyuci, luci/luci-app-owsync), as the
# SDK would: each recipe runs under make with scripts/sdk/ standing in for
# the SDK's rules.mk, package.mk, python3-package.mk, pypi.mk and luci.mk;
# then the control data, conffiles, keep.d, postinst/prerm (and apk's
# scripts and lib/apk/packages/ lists) are made as OpenWrt's
# include/package-pack.mk makes them, and packed with OpenWrt's own
# scripts/ipkg-build and apk-tools' `apk mkpkg`.
#
#   scripts/build-packages.sh [OUTDIR]        (default: build/packages)
#
# Needs (scripts/build-outside.sh builds them; its env.sh exports these):
#   OWSYNC_IPKG_BUILD  OpenWrt's scripts/ipkg-build     (else no .ipk)
#   OWSYNC_APK         apk-tools' apk, 3.x              (else no .apk)
#   OWSYNC_PYUCI_SDIST pyuci-0.10.3.tar.gz from PyPI    (checked against PKG_HASH)
#   OWSYNC_OWRT_PREFIX where libuci's headers and library are (include/, lib/)
#   OWSYNC_OLD_FEED    a checkout of pgaufillet/openwrt-ha-feed and
#   OWSYNC_C_BIN       owsync 1.2.0's binary: then that feed's owsync 1.2.0
#                      package too, in OUTDIR/1.2.0/ (to test the upgrade)
# and fakeroot, GNU make, git, zstd, python3 (3.11, as OpenWrt 24.10's python3)
# with venv.
# owsync is built from this working tree (as the SDK's source-tree override
# does), not from the commit its recipe names; that commit's source tarball
# is made as the SDK's git download makes it (include/download.mk,
# DownloadMethod/rawgit: git archive, submodules, tar sorted by name, owner 0,
# the commit's time, zstd -20) and its sha256 must be the recipe's
# PKG_MIRROR_HASH.  It is cloned from OWSYNC_SOURCE_URL (default: this
# repository, which holds the commit; PKG_SOURCE_URL names the public one).
# OWSYNC_FIXUP=1 writes the hash into the recipe instead (what
# `make package/owsync/check FIXUP=1` does in the SDK), after a version bump.
# The version is owsync.__version__: the recipe's PKG_VERSION must equal it,
# here and at the commit the recipe names.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SDK=$REPO/scripts/sdk
OUT=$(realpath -m "${1:-$REPO/build/packages}")
ARCH=${OWSYNC_PKG_ARCH:-$(uname -m)}
PYTHON=${PYTHON:-python3}

die() {
	echo "build-packages: $*" >&2
	exit 1
}

[ -n "${OWSYNC_IPKG_BUILD:-}${OWSYNC_APK:-}" ] ||
	die "neither OWSYNC_IPKG_BUILD nor OWSYNC_APK is set: nothing to pack with"
[ -f "${OWSYNC_PYUCI_SDIST:-}" ] || die "OWSYNC_PYUCI_SDIST: no such file: ${OWSYNC_PYUCI_SDIST:-}"
[ -f "${OWSYNC_OWRT_PREFIX:-}/include/uci.h" ] ||
	die "OWSYNC_OWRT_PREFIX: no include/uci.h under '${OWSYNC_OWRT_PREFIX:-}'"
command -v fakeroot >/dev/null || die "fakeroot is missing"

mkdir -p "$OUT"
W=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$W"' EXIT

# the host's python packages the recipes build with (python-setuptools/host)
HOSTPY=$OUT/.hostpython
if ! "$HOSTPY/bin/python" -c 'import build, installer, setuptools, sys
sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
	rm -rf "$HOSTPY"
	"$PYTHON" -m venv "$HOSTPY"
	"$HOSTPY/bin/pip" install -q 'setuptools>=77' wheel build installer
fi

# the feeds as the SDK lays them out, with the stand-ins where the SDK's are
FEEDS=$W/feeds
mkdir -p "$FEEDS/packages/net" "$FEEDS/packages/lang/python" "$FEEDS/luci/applications"
cp -R "$REPO/openwrt/owsync" "$FEEDS/packages/net/owsync"
cp -R "$REPO/openwrt/python-pyuci" "$FEEDS/packages/lang/python/python-pyuci"
cp "$SDK/python3-package.mk" "$SDK/pypi.mk" "$FEEDS/packages/lang/python/"
cp -R "$REPO/luci/luci-app-owsync" "$FEEDS/luci/applications/luci-app-owsync"
cp "$SDK/luci.mk" "$FEEDS/luci/luci.mk"

# sources: owsync's working tree; pyuci's sdist, if it is the one the recipe names
recipe_var() { sed -n "s/^$2:=//p" "$1" | head -1; }
RECIPE=$REPO/openwrt/owsync/Makefile
OWSYNC_VERSION=$(recipe_var "$RECIPE" PKG_VERSION)
py_version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p'; }
tree_version=$(py_version <"$REPO/owsync/__init__.py")
[ "$OWSYNC_VERSION" = "$tree_version" ] ||
	die "openwrt/owsync/Makefile: PKG_VERSION $OWSYNC_VERSION, but owsync.__version__ is $tree_version"

# owsync's source as the SDK downloads it (include/download.mk of the OpenWrt
# tree that scripts/build-outside.sh pins: DownloadMethod/rawgit, dl_tar_pack)
sdk_git_tarball() { # URL COMMIT SUBDIR OUTFILE
	local url=$1 commit=$2 sub=$3 out=$4 ts
	(
		umask 022
		cd "$W/dl"
		git clone -q "$url" "$sub"
		git -C "$sub" -c advice.detachedHead=false checkout -q "$commit"
		ts=$(git -C "$sub" log -1 --no-show-signature --format='@%ct')
		(cd "$sub" && git config core.abbrev 8 && git archive --format=tar HEAD --output="../$sub.tar.git")
		tar --numeric-owner --owner=0 --group=0 --ignore-failed-read -C "$sub" -f "$sub.tar.git" \
			-r .git .gitmodules 2>/dev/null || true
		rm -rf "$sub" && mkdir "$sub"
		tar -C "$sub" --no-same-permissions -xf "$sub.tar.git"
		(cd "$sub" && git submodule -q update --init --recursive -- && rm -rf .git .gitmodules)
		tar --numeric-owner --owner=0 --group=0 --mode=a-s --sort=name --mtime="$ts" -c "$sub" |
			${ZSTD:-zstd} -q -T0 --ultra -20 -c >"$out"
	)
}
mkdir -p "$W/dl"
src_commit=$(recipe_var "$RECIPE" PKG_SOURCE_VERSION)
[ "$(recipe_var "$RECIPE" PKG_SOURCE_PROTO)" = git ] && [ -n "$src_commit" ] ||
	die "openwrt/owsync/Makefile: no git source (PKG_SOURCE_PROTO, PKG_SOURCE_VERSION)"
git -C "${OWSYNC_SOURCE_URL:-$REPO}" cat-file -e "$src_commit^{commit}" 2>/dev/null ||
	[ -n "${OWSYNC_SOURCE_URL:-}" ] || die "PKG_SOURCE_VERSION $src_commit is not a commit of $REPO"
sdk_git_tarball "${OWSYNC_SOURCE_URL:-$REPO}" "$src_commit" "owsync-$OWSYNC_VERSION" \
	"$W/dl/owsync-$OWSYNC_VERSION.tar.zst"
src_version=$(tar --zstd -xOf "$W/dl/owsync-$OWSYNC_VERSION.tar.zst" \
	"owsync-$OWSYNC_VERSION/owsync/__init__.py" | py_version)
[ "$src_version" = "$OWSYNC_VERSION" ] ||
	die "PKG_SOURCE_VERSION $src_commit is owsync $src_version, not PKG_VERSION $OWSYNC_VERSION"
for f in $(recipe_var "$RECIPE" PKG_LICENSE_FILES); do
	tar --zstd -tf "$W/dl/owsync-$OWSYNC_VERSION.tar.zst" "owsync-$OWSYNC_VERSION/$f" >/dev/null 2>&1 ||
		die "PKG_LICENSE_FILES: $f is not in the source at $src_commit"
done
src_hash=$(sha256sum <"$W/dl/owsync-$OWSYNC_VERSION.tar.zst" | cut -d' ' -f1)
if [ "${OWSYNC_FIXUP:-}" = 1 ]; then
	sed -i "s/^PKG_MIRROR_HASH:=.*/PKG_MIRROR_HASH:=$src_hash/" "$RECIPE"
	echo "openwrt/owsync/Makefile: PKG_MIRROR_HASH:=$src_hash ($(${ZSTD:-zstd} -V))"
fi
[ "$(recipe_var "$RECIPE" PKG_MIRROR_HASH)" = "$src_hash" ] ||
	die "openwrt/owsync/Makefile: PKG_MIRROR_HASH is not owsync-$OWSYNC_VERSION.tar.zst's $src_hash" \
		"(packed with $(${ZSTD:-zstd} -V | head -1); OWSYNC_FIXUP=1 writes it)"

owsync_src=$W/build/owsync-$OWSYNC_VERSION
mkdir -p "$owsync_src"
(cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$owsync_src"
pyuci_hash=$(recipe_var "$REPO/openwrt/python-pyuci/Makefile" PKG_HASH)
[ "$(sha256sum <"$OWSYNC_PYUCI_SDIST" | cut -d' ' -f1)" = "$pyuci_hash" ] ||
	die "$OWSYNC_PYUCI_SDIST is not the sdist python-pyuci's PKG_HASH names"
mkdir -p "$W/build/pypi"
tar -xzf "$OWSYNC_PYUCI_SDIST" -C "$W/build/pypi"
for f in $(recipe_var "$REPO/openwrt/python-pyuci/Makefile" PKG_LICENSE_FILES); do
	[ -f "$W/build/pypi/pyuci-$(recipe_var "$REPO/openwrt/python-pyuci/Makefile" PKG_VERSION)/$f" ] ||
		die "python-pyuci's PKG_LICENSE_FILES: $f is not in $OWSYNC_PYUCI_SDIST"
done

# luci.mk's version: the app directory's last commit (day of year, seconds, hash)
read -r ct hash < <(git -C "$REPO" log -1 --format='%ct %h' -- luci/luci-app-owsync)
LUCI_VERSION=$(printf '%s.%05d~%s' "$(date -u -d "@$ct" +%y.%j)" "$((ct % 86400))" "$hash")

STAGE=$W/stage
run_recipe() { # DIR [make variables...]
	local dir=$1
	shift
	make -s -C "$dir" TOPDIR="$SDK" INCLUDE_DIR="$SDK" STAGE="$STAGE" BUILD_DIR="$W/build" \
		HOST_PYTHON3_BIN="$HOSTPY/bin/python" ARCH_PACKAGES="$ARCH" "$@" stage
}
run_recipe "$FEEDS/packages/net/owsync" PKG_BUILD_DIR="$owsync_src"
run_recipe "$FEEDS/packages/lang/python/python-pyuci" \
	PYTHON3_PKG_BUILD_CFLAGS="-I$OWSYNC_OWRT_PREFIX/include" \
	PYTHON3_PKG_BUILD_LDFLAGS="-L$OWSYNC_OWRT_PREFIX/lib"
run_recipe "$FEEDS/luci/applications/luci-app-owsync" PKG_VERSION="$LUCI_VERSION"
OLD_STAGE=
if [ -n "${OWSYNC_OLD_FEED:-}" ] && [ -n "${OWSYNC_C_BIN:-}" ]; then
	cp -R "$OWSYNC_OLD_FEED/owsync" "$FEEDS/packages/net/owsync-1.2.0"
	mkdir -p "$W/build/owsync-1.2.0/bin"
	cp "$OWSYNC_C_BIN" "$W/build/owsync-1.2.0/bin/owsync"
	OLD_STAGE=$W/old-stage
	run_recipe "$FEEDS/packages/net/owsync-1.2.0" \
		PKG_BUILD_DIR="$W/build/owsync-1.2.0" STAGE="$OLD_STAGE"
fi

# --- packing, as include/package-pack.mk does ---------------------------------

control() { # the CONTROL/control of the SDK's Package/NAME/CONTROL
	local version=$1
	echo "Package: $name"
	echo "Version: $version"
	[ -z "$depends" ] || echo "Depends: ${depends// /, }"
	[ -z "$conflicts" ] || echo "Conflicts: ${conflicts// /, }"
	[ -z "$provides" ] || echo "Provides: ${provides// /, }"
	echo "Source: $source_dir"
	echo "SourceName: $source_name"
	[ -z "$license" ] || echo "License: $license"
	[ -z "$license_files" ] || echo "LicenseFiles: $license_files"
	echo "Section: $section"
	[ -z "$url" ] || echo "URL: $url"
	[ -z "$maintainer" ] || echo "Maintainer: $maintainer"
	echo "Architecture: $arch"
	echo "Installed-Size: 0"
	printf 'Description: '
	sed -e 's,^[[:space:]]*, ,g' "$pkg/description"
}

keep_conffiles() { # conffiles the package does not ship are kept by sysupgrade
	local x
	[ -f "$pkg/conffiles" ] || return 0
	while read -r x; do
		[ -n "$x" ] && [ ! -f "$root/$x" ] || continue
		mkdir -p "$root/lib/upgrade/keep.d"
		echo "$x" >>"$root/lib/upgrade/keep.d/$name"
	done <"$pkg/conffiles"
}

pack_ipk() {
	local tree=$W/ipk/$name
	rm -rf "$tree"
	mkdir -p "$tree"
	cp -a "$root/." "$tree/"
	mkdir -p "$tree/CONTROL"
	control "$pkg_version-$pkg_release" >"$tree/CONTROL/control"
	chmod 644 "$tree/CONTROL/control"
	cat >"$tree/CONTROL/postinst" <<-'EOF'
		#!/bin/sh
		[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
		[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
		. ${IPKG_INSTROOT}/lib/functions.sh
		default_postinst $0 $@
	EOF
	cat >"$tree/CONTROL/prerm" <<-'EOF'
		#!/bin/sh
		[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
		. ${IPKG_INSTROOT}/lib/functions.sh
		default_prerm $0 $@
	EOF
	[ ! -f "$pkg/conffiles" ] || cp "$pkg/conffiles" "$tree/CONTROL/conffiles"
	[ ! -f "$pkg/preinst" ] || cp "$pkg/preinst" "$tree/CONTROL/preinst"
	[ ! -f "$pkg/postinst" ] || cp "$pkg/postinst" "$tree/CONTROL/postinst-pkg"
	[ ! -f "$pkg/prerm" ] || cp "$pkg/prerm" "$tree/CONTROL/prerm-pkg"
	[ ! -f "$pkg/postrm" ] || cp "$pkg/postrm" "$tree/CONTROL/postrm"
	chmod 0755 "$tree/CONTROL/postinst" "$tree/CONTROL/prerm"
	for s in preinst postinst-pkg prerm-pkg postrm; do
		[ ! -f "$tree/CONTROL/$s" ] || chmod 0755 "$tree/CONTROL/$s"
	done
	fakeroot bash "$OWSYNC_IPKG_BUILD" "$tree" "$OUT" >/dev/null
}

strip_lead() { sed -z 's/^\s*#!/#!/' "$1"; }

pack_apk() {
	local tree=$W/apk/$name adir=$W/apk-scripts/$name version="$pkg_version-r$pkg_release"
	rm -rf "$tree" "$adir"
	mkdir -p "$tree" "$adir"
	cp -a "$root/." "$tree/"
	mkdir -p "$tree/lib/apk/packages"
	{
		echo '#!/bin/sh'
		echo '[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0'
		echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
		echo '. ${IPKG_INSTROOT}/lib/functions.sh'
		echo 'export root="${IPKG_INSTROOT}"'
		echo "export pkgname=\"$name\""
		echo 'add_group_and_user'
		echo 'default_postinst'
		[ ! -f "$pkg/postinst" ] || strip_lead "$pkg/postinst"
	} >"$adir/post-install"
	{
		echo '#!/bin/sh'
		echo 'export PKG_UPGRADE=1'
		strip_lead "$adir/post-install"
	} >"$adir/post-upgrade"
	{
		echo '#!/bin/sh'
		echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
		echo '. ${IPKG_INSTROOT}/lib/functions.sh'
		echo 'export root="${IPKG_INSTROOT}"'
		echo "export pkgname=\"$name\""
		echo 'default_prerm'
		[ ! -f "$pkg/prerm" ] || strip_lead "$pkg/prerm"
	} >"$adir/pre-deinstall"
	local scripts=(--script "post-install:$adir/post-install" --script "post-upgrade:$adir/post-upgrade"
		--script "pre-deinstall:$adir/pre-deinstall")
	if [ -f "$pkg/preinst" ]; then
		cp "$pkg/preinst" "$adir/preinst"
		{ echo '#!/bin/sh'; echo 'export PKG_UPGRADE=1'; strip_lead "$adir/preinst"; } >"$adir/pre-upgrade"
		scripts+=(--script "pre-install:$adir/preinst" --script "pre-upgrade:$adir/pre-upgrade")
	fi
	if [ -f "$pkg/postrm" ]; then
		strip_lead "$pkg/postrm" >"$adir/postrm"
		scripts+=(--script "post-deinstall:$adir/postrm")
	fi
	(cd "$tree" && find . -type f,l -printf '/%P\n' | sort >"$W/list" && mv "$W/list" "lib/apk/packages/$name.list")
	if [ -f "$pkg/conffiles" ]; then
		cp "$pkg/conffiles" "$tree/lib/apk/packages/$name.conffiles"
		while read -r f; do
			[ -n "$f" ] && [ -f "$tree/$f" ] || continue
			echo "$f $(sha256sum <"$tree/$f" | cut -d' ' -f1)" >>"$tree/lib/apk/packages/$name.conffiles_static"
		done <"$pkg/conffiles"
	fi
	local apk_arch=$arch
	[ "$arch" != all ] || apk_arch=noarch
	fakeroot "$OWSYNC_APK" mkpkg \
		--info "name:$name" \
		--info "version:$version" \
		--info "description:$(tr -s ' \n' ' ' <"$pkg/description" | sed 's/^ //; s/ $//')" \
		--info "arch:$apk_arch" \
		--info "license:$license" \
		--info "origin:$source_dir" \
		--info "url:$url" \
		--info "maintainer:$maintainer" \
		--info "provides:$provides" \
		"${scripts[@]}" \
		--info "depends:$depends" \
		--files "$tree" \
		--output "$OUT/$name-$version.apk"
}

pack_all() { # STAGE OUT
	local pkg
	for pkg in "$1"/*/; do
		pkg=${pkg%/}
		case $pkg in *-src) continue ;; esac # sources only: never installed here
		# shellcheck disable=SC1091  # written by scripts/sdk/package.mk
		. "$pkg/meta.sh"
		case $name in
		owsync*) source_dir=feeds/packages/net/owsync ;;
		python3-pyuci*) source_dir=feeds/packages/lang/python/python-pyuci ;;
		*) source_dir=feeds/luci/applications/$name ;;
		esac
		root=$pkg/root
		keep_conffiles
		[ -z "${OWSYNC_IPKG_BUILD:-}" ] || OUT=$2 pack_ipk
		[ -z "${OWSYNC_APK:-}" ] || OUT=$2 pack_apk
		printf '%-22s %-24s %8s bytes installed\n' "$name" "$pkg_version-$pkg_release" \
			"$(du -sb --apparent-size "$root" | cut -f1)"
	done
}

rm -rf "$OUT"/*.ipk "$OUT"/*.apk "$OUT/1.2.0"
pack_all "$STAGE" "$OUT"
if [ -n "$OLD_STAGE" ]; then
	mkdir -p "$OUT/1.2.0"
	pack_all "$OLD_STAGE" "$OUT/1.2.0"
fi
find "$OUT" -name '*.ipk' -o -name '*.apk' | sort
