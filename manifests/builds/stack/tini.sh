#!/bin/sh
# docker-init: tini-static (what Docker ships as docker-init), built with CMake and the cross
# compiler, static, stripped.
# Environment: see manifests/builds/stack/README.md.
set -eu
mkdir "$WORK/build"
cd "$WORK/build"
cmake "$SRC" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="-ffile-prefix-map=$SRC=/usr/src/tini" >cmake.log 2>&1 || { cat cmake.log >&2; exit 1; }
make -j"$JOBS" tini-static >make.log 2>&1 || { cat make.log >&2; exit 1; }
"$STRIP" -o "$OUT/docker-init" tini-static
