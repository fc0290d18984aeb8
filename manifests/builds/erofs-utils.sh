#!/bin/sh
# mkfs.erofs and fsck.erofs from erofs-utils, with LZ4 and LZMA (microLZMA) linked in statically
# from Debian's static libraries (DEPS), so both need only the C library: no SELinux labels,
# FUSE, zlib/libdeflate, zstd or xxhash. The x86_64 build also makes the image itself
# (`--tar`, the same compressors the kernel decodes).
# Environment: see manifests/builds/README.md.
set -eu
cp -a "$SRC" "$WORK/src"
cd "$WORK/src"
./autogen.sh >autogen.log 2>&1
./configure --host="$HOST" --prefix=/usr --disable-fuse --without-selinux --without-uuid \
    --without-zlib --without-libdeflate --without-libzstd --without-xxhash --without-qpl \
    --enable-lz4 --enable-lzma \
    liblz4_CFLAGS="-I$DEPS/usr/include" liblz4_LIBS="-L$DEPS_LIB -llz4" \
    liblzma_CFLAGS="-I$DEPS/usr/include" liblzma_LIBS="-L$DEPS_LIB -llzma" \
    CC="$CC" AR="$AR" RANLIB="$RANLIB" CFLAGS="$CFLAGS" >configure.log
make -j"$JOBS" >make.log
"$STRIP" -o "$OUT/mkfs.erofs" mkfs/mkfs.erofs
"$STRIP" -o "$OUT/fsck.erofs" fsck/fsck.erofs
