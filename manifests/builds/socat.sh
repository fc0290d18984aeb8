#!/bin/sh
# socat without OpenSSL, libwrap and readline: the runtime relays plain sockets, and those three
# pulled about 6 MB of libraries (TLS, Kerberos through libwrap → libnsl → libtirpc) into the
# image. Needs only the C library.
# Environment: see manifests/builds/README.md.
set -eu
cp -a "$SRC" "$WORK/src"
cd "$WORK/src"
./configure --host="$HOST" --prefix=/usr --disable-openssl --disable-libwrap --disable-readline \
    --disable-fips CC="$CC" AR="$AR" CFLAGS="$CFLAGS" >configure.log
make -j"$JOBS" socat >make.log
"$STRIP" -o "$OUT/socat" socat
