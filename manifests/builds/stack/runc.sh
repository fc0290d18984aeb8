#!/bin/sh
# runc with seccomp: cgo (its nsenter C code and libseccomp), linked static-pie against the
# target's libseccomp.a and the cross toolchain's glibc; netgo/osusergo keep NSS out.
# Environment: see manifests/builds/stack/README.md.
set -eu
# shellcheck source=manifests/builds/stack/go-env.sh
. "$(dirname "$0")/go-env.sh"
go_tree github.com/opencontainers/runc
export CGO_ENABLED=1 CC
export PKG_CONFIG_SYSROOT_DIR="$TARGET_DEPS" PKG_CONFIG_LIBDIR="$TARGET_DEPS/usr/lib/$HOST/pkgconfig"
go build -buildmode=pie -tags "seccomp netgo osusergo static_build" \
    -ldflags "$GO_LDFLAGS -X main.version=${UPSTREAM_VERSION%%+*} -X main.gitCommit=debian-$VERSION -extldflags -static-pie" \
    -o "$OUT/runc" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
