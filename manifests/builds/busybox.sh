#!/bin/sh
# busybox, statically linked, configured like Debian's busybox-static (debian/config/pkg/static,
# which Debian's build uses) plus our patches (manifests/patches/busybox/: the ntpd applet).
# Built the way debian/rules builds a flavour: the config through `silentoldconfig`, then
# `make all` with the version string Debian gives it.
# Environment: see manifests/builds/README.md.
set -eu
cd "$WORK"
cat "$SRC/debian/config/os/linux" "$SRC/debian/config/pkg/static" >.config
yes "" | make -f "$SRC/Makefile" KBUILD_SRC="$SRC" CROSS_COMPILE="$HOST-" silentoldconfig >config.log
make -j"$JOBS" -f "$SRC/Makefile" KBUILD_SRC="$SRC" CROSS_COMPILE="$HOST-" SKIP_STRIP=y \
    KCONFIG_NOTIMESTAMP=1 BB_EXTRA_VERSION="Debian $VERSION boot-assets" \
    CONFIG_EXTRA_CFLAGS="$CFLAGS" all >make.log
"$STRIP" -o "$OUT/busybox" busybox
# Its own applet list (RUN: qemu-user when the target is not the host's arch); the image links
# every name in it.
$RUN "$OUT/busybox" --list >"$OUT/busybox.list"
