#!/usr/bin/env bash
# Build every outside component the opt-in tests need (README, "Tests that
# need outside components") from their public git repositories, at the
# commits pinned below, into PREFIX, and write PREFIX/env.sh exporting the
# variables the tests read:
#
#   scripts/build-outside.sh [PREFIX]      (default: ~/.cache/owsync-ext)
#   . PREFIX/env.sh && make test
#
# OWSYNC_GIT_BASE (default https://github.com) is where the repositories
# are: each is cloned from $OWSYNC_GIT_BASE/OWNER/NAME, so a directory of
# local clones laid out as OWNER/NAME serves as well. PyPI (through pip)
# gives the Python bindings' sources and the build tools (meson).
# A stage whose output is there is not built again: delete it to rebuild.
#
# Host packages (Debian 12): build-essential cmake pkg-config git
# libjson-c-dev libssl-dev zlib1g-dev python3-venv ninja-build
# busybox-static util-linux fakeroot.
set -euo pipefail

BASE=${OWSYNC_GIT_BASE:-https://github.com}
P=$(realpath -m "${1:-$HOME/.cache/owsync-ext}")
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-2}

# name   repository   commit (the README lists the same)
PINS="
libubox  openwrt/libubox  1aa36ee774c8db4d7a396903e0d2e1fb79ee8bf1
ubus     openwrt/ubus     3cc98db1a422dcf560f2d6347fd410f17565a89d
uci      openwrt/uci      66127cd76c5d0bd46d5a90302cc6110f53a4e2f8
udebug   openwrt/udebug   875e1a7af6ca9d86524d18169c3a79f4a1920053
procd    openwrt/procd    2c1834abae171261f2d9161e5a28c36cbcc394a4
ubox     openwrt/ubox     6f78fa496bf36c55864a41e353df7d13f04b1077
jsonpath openwrt/jsonpath afe72ad6414e0faedd3d780d9328e514b0083cae
openwrt  zhanhb/openwrt   caef0a839a80749b7a125f09cb26814980fb7202
c-owsync pgaufillet/owsync 2871f99cf56f4dd85abe35fed5ff6a366335ef06
ha-feed  pgaufillet/openwrt-ha-feed 26ed90ebfbf4dc7a1d0aeb4935500179b8607c63
opkg     openwrt/opkg-lede 38eccbb1fd694d4798ac1baf88f9ba83d1eac616
apk      alpinelinux/apk-tools d093f7c198a64bff0cd58afeaf638909fda24ca8
ucode    jow-/ucode       81205a25437a83e3b9e1eb55ac169be84453d53b
rpcd     openwrt/rpcd     4476687403d8c6e988eaa1ecc892e998838e6da9
uhttpd   openwrt/uhttpd   f682ccabee9ed5f39dd3b0aaf96228975eeb478d
lucihttp jow-/lucihttp    9b5b683fbb2bb0010aa031d620d0ab8105516757
cgi-io   openwrt/cgi-io   901b0f0463c9d16a8cf5b9ed37118d8484bc9176
luci     MorseMicro/luci  d5950a9fa5a5d56d2cd6d7f7097e4062ab958531
"
PYPI="ubus==0.1.3 pyuci==0.10.3"

SRC=$P/src
O=$P/owrt
ROOT=$P/openwrt-root
TOOLS=$P/pkgtools

say() { printf '== %s\n' "$*" >&2; }
die() {
	echo "build-outside: $*" >&2
	exit 1
}

pin() { # NAME -> "repository commit"
	awk -v n="$1" '$1 == n { print $2, $3 }' <<<"$PINS"
}

# the source of NAME at its pinned commit, in $SRC/NAME
checkout() {
	local name=$1 repo commit
	read -r repo commit < <(pin "$name")
	[ -n "$commit" ] || die "no pin for $name"
	if [ ! -d "$SRC/$name/.git" ]; then
		say "clone $BASE/$repo"
		git clone -q --no-checkout "$BASE/$repo" "$SRC/$name"
	fi
	git -C "$SRC/$name" -c advice.detachedHead=false checkout -q -f "$commit" ||
		die "$repo has no commit $commit"
}

cmake_build() { # NAME [cmake args...]: configure and build in $SRC/NAME/$BUILD (build)
	local name=$1
	shift
	cmake -S "$SRC/$name" -B "$SRC/$name/${BUILD-build}" -DCMAKE_INSTALL_PREFIX="$O" \
		-DCMAKE_PREFIX_PATH="$O" -DCMAKE_INSTALL_RPATH="$O/lib" \
		-DCMAKE_C_FLAGS="-I$O/include ${CFLAGS_EXTRA:-}" \
		-DCMAKE_EXE_LINKER_FLAGS="-L$O/lib -Wl,-rpath,$O/lib" \
		-DCMAKE_SHARED_LINKER_FLAGS="-L$O/lib -Wl,-rpath,$O/lib" "$@" >"$SRC/$name.cmake.log"
}

# --- OpenWrt's libraries and daemons ------------------------------------------

build_owrt() {
	[ -x "$O/sbin/procd" ] && [ -x "$O/bin/jsonfilter" ] && return 0
	mkdir -p "$O/bin" "$O/sbin" "$O/lib" "$O/include"
	checkout libubox
	cmake_build libubox -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF
	make -s -C "$SRC/libubox/build" -j"$JOBS" install >/dev/null

	checkout ubus
	cmake_build ubus -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF
	make -s -C "$SRC/ubus/build" -j"$JOBS" install >/dev/null

	# udebug: its library only (procd links it)
	checkout udebug
	gcc -shared -fPIC -O2 -I"$O/include" -o "$O/lib/libudebug.so" \
		"$SRC/udebug/lib.c" "$SRC/udebug/lib-pcap.c" -L"$O/lib" -lubus -lubox -Wl,-rpath,"$O/lib"
	cp "$SRC/udebug/udebug.h" "$SRC/udebug/udebug-pcap.h" "$O/include/"

	checkout uci
	cmake_build uci -DBUILD_LUA=OFF -DBUILD_STATIC=OFF
	make -s -C "$SRC/uci/build" -j"$JOBS" install >/dev/null

	# procd: Debian 12's glibc 2.36 has no strlcpy (2.38 has)
	checkout procd
	mkdir -p "$SRC/shim"
	cat >"$SRC/shim/strlcpy.h" <<-'EOF'
		#ifndef OWSYNC_STRLCPY_SHIM_H
		#define OWSYNC_STRLCPY_SHIM_H
		#include <stddef.h>
		size_t strlcpy(char *dst, const char *src, size_t size);
		#endif
	EOF
	cat >"$SRC/shim/strlcpy.c" <<-'EOF'
		#include <string.h>
		size_t strlcpy(char *dst, const char *src, size_t size)
		{
			size_t len = strlen(src);
			if (size) {
				size_t n = len < size - 1 ? len : size - 1;
				memcpy(dst, src, n);
				dst[n] = '\0';
			}
			return len;
		}
	EOF
	gcc -c -fPIC -O2 -o "$SRC/shim/strlcpy.o" "$SRC/shim/strlcpy.c"
	CFLAGS_EXTRA="-Wno-error=format-overflow -include $SRC/shim/strlcpy.h" \
		cmake_build procd -DCMAKE_EXE_LINKER_FLAGS="-L$O/lib -Wl,-rpath,$O/lib $SRC/shim/strlcpy.o" \
		-DCMAKE_SHARED_LINKER_FLAGS="-L$O/lib -Wl,-rpath,$O/lib $SRC/shim/strlcpy.o"
	make -s -C "$SRC/procd/build" -j"$JOBS" procd setlbf >/dev/null
	cp "$SRC/procd/build/procd" "$O/sbin/"
	cp "$SRC/procd/build/libsetlbf.so" "$O/lib/"

	# ubox: validate_data, logd, logread
	checkout ubox
	cmake_build ubox
	make -s -C "$SRC/ubox/build" -j"$JOBS" validate_data logd logread >/dev/null
	cp "$SRC/ubox/build/validate_data" "$SRC/ubox/build/logd" "$SRC/ubox/build/logread" "$O/sbin/"
	cp "$SRC/ubox/build/libvalidate.so" "$O/lib/"

	# jsonpath builds its parser generator with paths relative to its source
	checkout jsonpath
	BUILD=. cmake_build jsonpath
	make -s -C "$SRC/jsonpath" -j"$JOBS" jsonpath >/dev/null
	cp "$SRC/jsonpath/jsonpath" "$O/bin/jsonfilter" # OpenWrt installs it so
}

# --- an OpenWrt root: OpenWrt's shell library and the daemons above -----------

owrt_file() { # PATH-IN-OPENWRT DEST [MODE]
	git -C "$SRC/openwrt" show "HEAD:$1" >"$2"
	chmod "${3:-0644}" "$2"
}

build_root() {
	[ -f "$ROOT/.done" ] && return 0
	checkout openwrt
	rm -rf "$ROOT"
	mkdir -p "$ROOT"/{bin,sbin,etc,lib/functions,lib/config,lib/upgrade,usr/bin,usr/lib,usr/share/libubox}
	local bf=package/base-files/files pf=package/system/procd/files
	owrt_file $bf/etc/rc.common "$ROOT/etc/rc.common" 0755
	owrt_file $bf/lib/functions.sh "$ROOT/lib/functions.sh"
	owrt_file $bf/lib/functions/service.sh "$ROOT/lib/functions/service.sh"
	owrt_file $bf/lib/functions/system.sh "$ROOT/lib/functions/system.sh"
	owrt_file $bf/lib/upgrade/common.sh "$ROOT/lib/upgrade/common.sh"
	owrt_file $bf/sbin/hotplug-call "$ROOT/sbin/hotplug-call" 0755
	# as base-files' Makefile does
	sed -i 's,%PATH%,/usr/sbin:/usr/bin:/sbin:/bin,g' "$ROOT/sbin/hotplug-call"
	owrt_file $bf/sbin/sysupgrade "$ROOT/sbin/sysupgrade" 0755
	owrt_file $pf/procd.sh "$ROOT/lib/functions/procd.sh"
	owrt_file $pf/reload_config "$ROOT/sbin/reload_config" 0755
	owrt_file $pf/service "$ROOT/sbin/service" 0755
	owrt_file package/system/uci/files/lib/config/uci.sh "$ROOT/lib/config/uci.sh"
	cp "$SRC/libubox/sh/jshn.sh" "$ROOT/usr/share/libubox/jshn.sh"
	cp "$O/bin/jshn" "$O/bin/jsonfilter" "$ROOT/usr/bin/"
	cp "$O/sbin/ubusd" "$O/bin/ubus" "$O/sbin/procd" "$O/sbin/logd" "$O/sbin/logread" \
		"$O/bin/uci" "$O/sbin/validate_data" "$ROOT/sbin/"
	cp "$O"/lib/lib*.so "$ROOT/usr/lib/"
	cp "$O/lib/libsetlbf.so" "$ROOT/lib/"
	# Debian's static busybox runs OpenWrt's shell files unchanged
	local bb
	bb=$(command -v busybox) || die "busybox is missing (Debian: busybox-static)"
	cp "$bb" "$ROOT/bin/busybox"
	# rc.common needs flock, which Debian's busybox lacks: util-linux's
	cp "$(command -v flock)" "$ROOT/usr/bin/flock"
	touch "$ROOT/.done"
}

# --- the Python bindings (PyPI sdists, built against the libraries above) ------

build_pybind() {
	[ -d "$P/pybind/euci" ] && return 0
	mkdir -p "$SRC/pypi" "$P/pybind"
	# shellcheck disable=SC2086  # one argument per requirement
	"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$SRC/pypi" $PYPI
	local sdist
	for sdist in "$SRC"/pypi/ubus-*.tar.gz "$SRC"/pypi/pyuci-*.tar.gz; do
		tar -xzf "$sdist" -C "$SRC/pypi"
		(cd "$SRC/pypi/$(basename "$sdist" .tar.gz)" &&
			CFLAGS="-I$O/include" LDFLAGS="-L$O/lib -Wl,-rpath,$O/lib" \
				"$PYTHON" -m pip install -q --no-deps --target "$P/pybind" .)
	done
	[ -d "$P/pybind/euci" ] || die "pyuci did not install euci"
}

# --- owsync 1.2.0 (the C one), its OpenWrt feed --------------------------------

build_c_owsync() {
	[ -x "$SRC/c-owsync/bin/owsync" ] && return 0
	checkout c-owsync
	make -s -C "$SRC/c-owsync" -j"$JOBS" >/dev/null
}

# --- the packaging tools: OpenWrt's ipkg-build, opkg, apk ----------------------

build_pkgtools() {
	[ -x "$TOOLS/bin/apk" ] && [ -x "$TOOLS/bin/opkg-cl" ] && return 0
	mkdir -p "$TOOLS/bin"
	checkout ha-feed
	checkout openwrt
	owrt_file scripts/ipkg-build "$TOOLS/bin/ipkg-build" 0755

	checkout opkg
	cmake -S "$SRC/opkg" -B "$SRC/opkg/build" -DCMAKE_INSTALL_PREFIX="$TOOLS" -DCMAKE_PREFIX_PATH="$O" \
		-DCMAKE_C_FLAGS="-I$O/include" -DBUILD_TESTS=OFF \
		-DCMAKE_EXE_LINKER_FLAGS="-L$O/lib -Wl,-rpath,$O/lib" >"$SRC/opkg.cmake.log"
	make -s -C "$SRC/opkg/build" -j"$JOBS" install >/dev/null

	# apk-tools with meson (from PyPI), as OpenWrt's host build configures it
	checkout apk
	[ -x "$TOOLS/venv/bin/meson" ] || {
		"$PYTHON" -m venv "$TOOLS/venv"
		"$TOOLS/venv/bin/pip" install -q meson ninja
	}
	PATH=$TOOLS/venv/bin:$PATH meson setup --wipe "$SRC/apk/build" "$SRC/apk" --prefix="$TOOLS" \
		-Ddocs=disabled -Dhelp=disabled -Dlua=disabled -Durl_backend=wget -Dzstd=disabled \
		-Dpython=disabled -Dtests=disabled -Dcrypto_backend=openssl \
		-Ddefault_library=static >"$SRC/apk.meson.log"
	PATH=$TOOLS/venv/bin:$PATH meson install -C "$SRC/apk/build" >/dev/null
}

# --- LuCI's runtime, laid out as its packages install it (OWSYNC_LUCI_ROOT) ----
# Built for /usr (ucode, rpcd and uhttpd compile their module, plugin and
# ACL directories in from their prefix) and installed under $LUCI.

LUCI=$P/luci-root

luci_cmake() { # NAME [cmake args...]: build NAME for /usr, install it under $LUCI
	# (SHIM=1: with build_owrt's strlcpy, which Debian 12's glibc lacks, and
	# glibc's vasprintf, which musl declares by default)
	local name=$1 cflags="-I$O/include -I$LUCI/usr/include ${CFLAGS_EXTRA:-}" ldflags="-L$O/lib -L$LUCI/usr/lib"
	shift
	checkout "$name"
	rm -rf "$SRC/$name/build"
	if [ -n "${SHIM:-}" ]; then
		cflags="$cflags -D_GNU_SOURCE= -include $SRC/shim/strlcpy.h"
		ldflags="$ldflags $SRC/shim/strlcpy.o"
	fi
	cmake -S "$SRC/$name" -B "$SRC/$name/build" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_PREFIX_PATH="$O;$LUCI/usr" -DCMAKE_C_FLAGS="$cflags" \
		-DCMAKE_EXE_LINKER_FLAGS="$ldflags -Wl,-rpath,$O/lib" \
		-DCMAKE_SHARED_LINKER_FLAGS="$ldflags -Wl,-rpath,$O/lib" \
		-DCMAKE_MODULE_LINKER_FLAGS="$ldflags -Wl,-rpath,$O/lib" \
		"$@" >"$SRC/$name.cmake.log"
	make -s -C "$SRC/$name/build" -j"$JOBS" >/dev/null
	make -s -C "$SRC/$name/build" install DESTDIR="$LUCI" >/dev/null
}

luci_pkg() { # DIR-IN-LUCI: htdocs, root and ucode where luci.mk puts them
	local d=$SRC/luci/$1
	[ ! -d "$d/htdocs" ] || { mkdir -p "$LUCI/www" && cp -pR "$d/htdocs/." "$LUCI/www/"; }
	[ ! -d "$d/root" ] || cp -pR "$d/root/." "$LUCI/"
	[ ! -d "$d/ucode" ] || {
		mkdir -p "$LUCI/usr/share/ucode/luci"
		cp -pR "$d/ucode/." "$LUCI/usr/share/ucode/luci/"
	}
}

build_luci() {
	[ -f "$LUCI/.done" ] && return 0
	rm -rf "$LUCI"
	mkdir -p "$LUCI"
	luci_cmake ucode -DRTNL_SUPPORT=OFF -DNL80211_SUPPORT=OFF -DDIGEST_SUPPORT=OFF \
		-DZLIB_SUPPORT=OFF -DUBUS_SUPPORT=ON -DUCI_SUPPORT=ON -DULOOP_SUPPORT=ON
	SHIM=1 luci_cmake rpcd -DIWINFO_SUPPORT=OFF -DFILE_SUPPORT=ON -DRPCSYS_SUPPORT=ON -DUCODE_SUPPORT=ON
	mkdir -p "$LUCI/usr/share/rpcd/acl.d" "$LUCI/etc/init.d"
	cp "$SRC/rpcd/unauthenticated.json" "$LUCI/usr/share/rpcd/acl.d/"
	checkout openwrt
	owrt_file package/system/rpcd/files/rpcd.init "$LUCI/etc/init.d/rpcd" 0755
	# gcc 12 finds a false overread in uhttpd's TLS redirect check (TLS is off)
	SHIM=1 CFLAGS_EXTRA=-Wno-error=stringop-overread luci_cmake uhttpd -DTLS_SUPPORT=OFF -DLUA_SUPPORT=OFF -DUBUS_SUPPORT=ON -DUCODE_SUPPORT=ON
	CFLAGS_EXTRA=-D_GNU_SOURCE= luci_cmake lucihttp -DBUILD_LUA=OFF -DBUILD_UCODE=ON -DBUILD_TESTS=OFF
	luci_cmake cgi-io
	mkdir -p "$LUCI/www/cgi-bin" "$LUCI/usr/libexec"
	mv "$LUCI/usr/sbin/cgi-io" "$LUCI/usr/libexec/cgi-io" # where OpenWrt's package puts it
	local cgi
	for cgi in upload download backup exec; do
		ln -sf ../../usr/libexec/cgi-io "$LUCI/www/cgi-bin/cgi-$cgi"
	done

	checkout luci
	luci_pkg modules/luci-base
	luci_pkg themes/luci-theme-bootstrap
	mkdir -p "$LUCI/usr/libexec"
	cp -p "$SRC/luci/modules/luci-mod-network/root/usr/libexec/luci-peeraddr" "$LUCI/usr/libexec/"
	# luci.core (core.so), version.uc, ucode-mod-html, as their src/ Makefiles build them
	local rev
	rev=$(git -C "$SRC/luci" log -1 --format=%h)
	make -s -C "$SRC/luci/modules/luci-base/src" core.so version.uc LUCI_VERSION="$rev" \
		LUCI_GITBRANCH=master FPIC=-fPIC CFLAGS="-O2 -D_GNU_SOURCE -I$O/include -I$LUCI/usr/include" \
		LDFLAGS="-L$O/lib -L$LUCI/usr/lib" >/dev/null
	mkdir -p "$LUCI/usr/lib/ucode/luci"
	cp "$SRC/luci/modules/luci-base/src/core.so" "$LUCI/usr/lib/ucode/luci/"
	cp "$SRC/luci/modules/luci-base/src/version.uc" "$LUCI/usr/share/ucode/luci/"
	gcc -shared -fPIC -O2 -D_GNU_SOURCE -I"$LUCI/usr/include" -o "$LUCI/usr/lib/ucode/html.so" \
		"$SRC"/luci/contrib/package/ucode-mod-html/src/*.c
	# luci.mk's SubstituteVersion: the cache-busting ?v= of the templates
	find "$LUCI/usr/share/ucode/luci" -type f -name '*.ut' -exec sed -i \
		-e "s/{# *\([^ ]*\)PKG_VERSION *#}/\1$rev/g" \
		-e "s/\"\({{ *\(media\|resource\) *}}[^\"]*\.\(js\|css\)\)\"/\"\1?v=$rev\"/g" {} +
	touch "$LUCI/.done"
}

mkdir -p "$SRC"
say "prefix $P, repositories from $BASE"
build_owrt
build_root
build_pybind
build_c_owsync
build_pkgtools
build_luci

cat >"$P/env.sh" <<EOF
# outside components for owsync's opt-in tests, built by scripts/build-outside.sh
export OWSYNC_C_BIN=$SRC/c-owsync/bin/owsync
export OWSYNC_C_SUITE=$SRC/c-owsync
export OWSYNC_UBUSD=$O/sbin/ubusd
export OWSYNC_UBUS=$O/bin/ubus
export OWSYNC_UCI=$O/bin/uci
export OWSYNC_PROCD=$O/sbin/procd
export OWSYNC_PYBINDINGS=$P/pybind
export OWSYNC_OPENWRT_ROOT=$ROOT
export OWSYNC_OWRT_PREFIX=$O
export OWSYNC_OPKG=$TOOLS/bin/opkg-cl
export OWSYNC_APK=$TOOLS/bin/apk
export OWSYNC_IPKG_BUILD=$TOOLS/bin/ipkg-build
export OWSYNC_PYUCI_SDIST=$(ls "$SRC"/pypi/pyuci-*.tar.gz)
export OWSYNC_OLD_FEED=$SRC/ha-feed
export OWSYNC_LUCI_ROOT=$LUCI
EOF
say "done: . $P/env.sh"
