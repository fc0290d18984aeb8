#!/bin/sh
# mke2fs (shipped as /sbin/mkfs.ext4) and e2fsck from e2fsprogs, with our patches
# (manifests/patches/e2fsprogs/). e2fsprogs' own uuid and blkid libraries and its libext2fs are
# linked in statically, so both programs need only the C library. No translations, no fuse2fs,
# debugfs, resize2fs or e4defrag (nothing the runtime runs), no libarchive or libmagic (loaded at
# run time by mke2fs -d, which the runtime does not use).
# Environment: see manifests/builds/README.md.
set -eu
cd "$WORK"
"$SRC/configure" --host="$HOST" --prefix=/usr \
    --enable-libuuid --enable-libblkid --disable-nls --disable-fuse2fs --disable-debugfs \
    --disable-imager --disable-resizer --disable-defrag --disable-uuidd --disable-e2initrd-helper \
    --disable-backtrace --disable-tdb --disable-bmap-stats --without-libarchive \
    CC="$CC" AR="$AR" RANLIB="$RANLIB" CFLAGS="$CFLAGS" >configure.log
make -j"$JOBS" libs >make.log
make -j"$JOBS" -C e2fsck e2fsck >>make.log
make -j"$JOBS" -C misc mke2fs >>make.log
"$STRIP" -o "$OUT/e2fsck" e2fsck/e2fsck
"$STRIP" -o "$OUT/mke2fs" misc/mke2fs
