#!/bin/sh
# The NFS server tools rpc.nfsd, rpc.mountd and exportfs from nfs-utils, linked statically
# against libtirpc built without GSS-API (Debian's libtirpc pulls in Kerberos). NFSv4 serving is
# the kernel's nfsd plus these three: rpc.nfsd starts the server threads and picks the versions,
# rpc.mountd answers the kernel's export-cache upcalls (also for v4-only), exportfs loads the
# export table. No rpcbind, idmapd, gssd, nfsdcld or mount.nfs (a v4 server with AUTH_SYS and
# numeric ids needs none of them). `--disable-nfsv4` and `--disable-nfsv41` leave out those
# client-side daemons (idmapd, nfsidmap, blkmapd) only: the server's NFSv4 is the kernel's,
# and rpc.mountd builds the v4 pseudo-root whatever they say. configure insists on libevent
# and sqlite3 for the daemons left out (nfsdcld, fsidd); these three programs use neither, so
# those checks are answered through configure's cache variables. rpc.mountd links -luuid
# whatever configure says: DEPS has Debian's static libuuid (nothing of it is used with
# --disable-uuid, so nothing of it lands in the program).
# configure's own libtirpc probe links -ltirpc: LDFLAGS points it at the static one built here
# (never a libtirpc the host may have). The RPC stubs are generated with the host's rpcgen
# (rpcsvc-proto).
# Environment: see manifests/builds/README.md.
set -eu
mkdir -p "$WORK/tirpc"
# nfs-utils builds only in its own tree (its support/ headers are found relative to it).
cp -a "$SRC" "$WORK/nfs"
cd "$WORK/tirpc"
"$SRC_LIBTIRPC/configure" --host="$HOST" --prefix=/usr --disable-gssapi --disable-shared \
    --enable-static CC="$CC" AR="$AR" RANLIB="$RANLIB" CFLAGS="$CFLAGS" >configure.log
make -j"$JOBS" >make.log
make install DESTDIR="$WORK/tirpc-root" >>make.log
TIRPC="$WORK/tirpc-root/usr"
cd "$WORK/nfs"
./configure --host="$HOST" --prefix=/usr --sbindir=/usr/sbin \
    --disable-nfsv4 --disable-nfsv41 --disable-gss --disable-svcgss --disable-nfsdcld --disable-nfsdctl --disable-uuid --disable-mount \
    --disable-junction --disable-caps --disable-ldap --disable-nfsrahead --disable-nfsdcltrack \
    --without-tcp-wrappers --with-systemd=no \
    CC="$CC" AR="$AR" RANLIB="$RANLIB" CFLAGS="$CFLAGS -I$DEPS/usr/include" LDFLAGS="-L$DEPS_LIB -L$TIRPC/lib" \
    TIRPC_CFLAGS="-I$TIRPC/include/tirpc" TIRPC_LIBS="$TIRPC/lib/libtirpc.a -lpthread" \
    ac_cv_lib_event_core_event_base_dispatch=yes ac_cv_header_event2_event_h=yes \
    libsqlite3_cv_is_recent=yes \
    >configure.log
# Only the support libraries the three programs link (support/reexport also holds fsidd).
for dir in export misc nfs; do make -j"$JOBS" -C "support/$dir" >>make.log; done
make -C support/reexport libreexport.a >>make.log
for tool in nfsd mountd exportfs; do make -j"$JOBS" -C "utils/$tool" >>make.log; done
"$STRIP" -o "$OUT/rpc.nfsd" utils/nfsd/nfsd
"$STRIP" -o "$OUT/rpc.mountd" utils/mountd/mountd
"$STRIP" -o "$OUT/exportfs" utils/exportfs/exportfs
