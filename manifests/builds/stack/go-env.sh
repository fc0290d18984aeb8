# Sourced by the Go builds of the stack: Debian's Go from $GO_DEPS, GOPATH mode (Debian's Go
# sources, no modules, no network), the target arch, reproducible flags.
# go_tree IMPORT_PATH: copies $SRC to $WORK/gopath/src/IMPORT_PATH and enters it.
set -eu
set -- "$GO_DEPS"/usr/lib/go-*
[ -x "$1/bin/go" ] || { echo "no Go toolchain under $GO_DEPS/usr/lib/go-*" >&2; exit 1; }
export GOROOT="$1"
export GOPATH="$WORK/gopath:$GO_DEPS/usr/share/gocode"
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-trimpath
export GOCACHE="$WORK/go-cache" GOOS=linux GOARCH
export PATH="$GOROOT/bin:$PATH"
# No build ID: the bytes depend on the inputs only; -s -w: no symbol tables or DWARF.
export GO_LDFLAGS="-s -w -buildid="

go_tree() {
    mkdir -p "$WORK/gopath/src/$(dirname "$1")"
    cp -a "$SRC" "$WORK/gopath/src/$1"
    cd "$WORK/gopath/src/$1"
}
