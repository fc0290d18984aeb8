#!/bin/sh
# containerd, its runc shim and ctr, pure Go (static). Laid out as Debian's rules do: the tree at
# github.com/containerd/containerd/v2 with its api module beside it, Debian's few vendored
# packages (debian/vendor) as the GOPATH's vendor folder. The version says it carries our patch.
# Environment: see manifests/builds/stack/README.md.
set -eu
# shellcheck source=manifests/builds/stack/go-env.sh
. "$(dirname "$0")/go-env.sh"
# Bump with every change to manifests/patches/containerd/.
OURS=boot.1
go_tree github.com/containerd/containerd/v2
mv api ../api
rm -rf vendor
ln -s "$PWD/debian/vendor" "$WORK/gopath/src/vendor"
ours_version="${UPSTREAM_VERSION%%+*}-$OURS"
export CGO_ENABLED=0
go build -tags "no_btrfs no_zfs no_aufs no_devmapper" \
    -ldflags "$GO_LDFLAGS -X github.com/containerd/containerd/v2/version.Version=$ours_version -X github.com/containerd/containerd/v2/version.Revision=debian-$VERSION" \
    -o "$OUT/" ./cmd/containerd ./cmd/containerd-shim-runc-v2 ./cmd/ctr >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log" >&2; exit 1; }
