#!/bin/sh
# dockerd and the docker CLI from Debian's docker.io (engine, cli and buildkit in one source),
# pure Go (static). As Debian's rules do: the Files-Excluded paths of debian/copyright removed
# from every component (the orig tarballs still carry some vendored copies), then engine, cli
# and buildkit at their import paths.
# Environment: see manifests/builds/stack/README.md.
set -eu
# shellcheck source=manifests/builds/stack/go-env.sh
. "$(dirname "$0")/go-env.sh"
cd "$SRC" || exit 1
excluded=$(perl -0nE 'say grep { $_=q{ */}.$_ } split(/\s+/,$1) if m{^Files\-Excluded:\s*(.*?)(?:\n\n|^Files|^Comment:)}sm;' debian/copyright)
# shellcheck disable=SC2086 # one glob per word
rm -rf $excluded
find ./*/vendor -mindepth 1 -type d -empty -delete
for tree in engine:github.com/docker/docker cli:github.com/docker/cli buildkit:github.com/moby/buildkit; do
    mkdir -p "$WORK/gopath/src/$(dirname "${tree#*:}")"
    cp -a "$SRC/${tree%%:*}" "$WORK/gopath/src/${tree#*:}"
done
export CGO_ENABLED=0
tags="netgo osusergo static_build exclude_graphdriver_btrfs exclude_graphdriver_devicemapper exclude_graphdriver_zfs"
cd "$WORK/gopath/src/github.com/docker/docker" || exit 1
go build -tags "$tags" \
    -ldflags "$GO_LDFLAGS -X github.com/docker/docker/dockerversion.Version=${UPSTREAM_VERSION%%+*} -X github.com/docker/docker/dockerversion.GitCommit=debian-$VERSION -X github.com/docker/docker/dockerversion.ProductName=docker" \
    -o "$OUT/dockerd" ./cmd/dockerd >"$WORK/dockerd.log" 2>&1 || { cat "$WORK/dockerd.log" >&2; exit 1; }
cd "$WORK/gopath/src/github.com/docker/cli" || exit 1
go build -tags "$tags" \
    -ldflags "$GO_LDFLAGS -X github.com/docker/cli/cli/version.Version=${UPSTREAM_VERSION%%+*} -X github.com/docker/cli/cli/version.GitCommit=debian-$VERSION" \
    -o "$OUT/docker" ./cmd/docker >"$WORK/docker.log" 2>&1 || { cat "$WORK/docker.log" >&2; exit 1; }
