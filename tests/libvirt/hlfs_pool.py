#!/usr/bin/env python3
"""The hlfs storage pool of our patched libvirt, driven through libvirt-python.

Runs against a running libvirtd (tests/e2e/libvirt_clients.sh starts a
private one, builds libvirt-python against the same prefix and sets):

  HLFS_LIBVIRT_URI       the daemon, e.g. qemu+unix:///system?socket=/tmp/.../libvirt-sock
  HLFS_LIBVIRT_POOL_DIR  an existing directory; the pool goes in POOL_DIR/python/pool
  HLFS_LIBVIRT_PREFIX    the libvirt install prefix: the client library must come from it
  HLFS_CLI               the hlfs CLI the daemon uses, to check results independently

Each check prints "ok ..."; the first failure prints "FAIL ..." and exits 1.
The pool is destroyed and undefined at the end, also after a failure.
"""

import json
import os
import subprocess
import sys
import traceback

import libvirt

MIB = 1 << 20
BAD_NAMES = ["../evil", "a/b", "a%b", "a;touch x", "$(id)", "-rf", ".hidden"]


class CheckFailed(Exception):
    pass


def ok(msg):
    print(f"ok   {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def env(name):
    val = os.environ.get(name)
    if not val:
        raise CheckFailed(
            f"{name} is not set: run tests/e2e/libvirt_clients.sh, which starts a patched "
            "libvirtd and sets HLFS_LIBVIRT_URI, HLFS_LIBVIRT_POOL_DIR, HLFS_LIBVIRT_PREFIX, HLFS_CLI")
    return val


def expect_error(fn, want, what):
    """fn() must raise libvirt.libvirtError whose message contains want."""
    try:
        fn()
    except libvirt.libvirtError as e:
        msg = e.get_error_message() or str(e)
        check(want in msg, f"{what}: expected an error containing {want!r}, got {msg!r}")
        return msg
    raise CheckFailed(f"{what}: the call succeeded")


def cli(*args):
    """Runs the hlfs CLI (argv, no shell); returns stdout bytes."""
    r = subprocess.run([env("HLFS_CLI"), *args], capture_output=True, check=False)
    check(r.returncode == 0, f"hlfs {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def cli_info(uri):
    return json.loads(cli("info", "--output", "json", uri))


def vol_xml(name, capacity):
    """Volume XML built by hand on purpose: the bad-name checks must reach
    the daemon's own validation (names are XML-escaped, nothing else)."""
    esc = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f"<volume><name>{esc}</name><capacity unit='bytes'>{capacity}</capacity>"
            "<target><format type='raw'/></target></volume>")


def upload(conn, vol, data):
    st = conn.newStream(0)
    vol.upload(st, 0, 0, 0)
    try:
        off = 0
        while off < len(data):
            n = st.send(data[off:off + 256 * 1024])
            check(n > 0, f"stream send returned {n}")
            off += n
        st.finish()
    except Exception:
        try:
            st.abort()
        except libvirt.libvirtError:
            pass
        raise


def download(conn, vol):
    st = conn.newStream(0)
    vol.download(st, 0, 0, 0)
    chunks = []
    try:
        while True:
            buf = st.recv(256 * 1024)
            check(isinstance(buf, bytes), f"stream recv returned {buf!r}")
            if not buf:
                break
            chunks.append(buf)
        st.finish()
    except Exception:
        try:
            st.abort()
        except libvirt.libvirtError:
            pass
        raise
    return b"".join(chunks)


def client_library(conn, prefix):
    check(libvirt.getVersion() == 11003000, f"libvirt.getVersion() = {libvirt.getVersion()}")
    check(conn.getLibVersion() == 11003000, f"daemon library version {conn.getLibVersion()}")
    real = os.path.realpath(prefix) + "/"
    with open("/proc/self/maps", encoding="utf-8") as f:
        libs = {line.split()[5] for line in f if len(line.split()) > 5 and "/libvirt.so" in line}
    check(libs, "libvirt.so is not mapped")
    for lib in libs:
        check(os.path.realpath(lib).startswith(real), f"libvirt.so loaded from {lib}, not from {prefix}")
    ok(f"libvirt-python {libvirt.getVersion()} uses {' '.join(sorted(libs))}; daemon 11003000")


def run(conn, pool_name, pooldir):
    prefix = env("HLFS_LIBVIRT_PREFIX")
    client_library(conn, prefix)
    pool_uri = f"local://{pooldir}"

    # pool: define, build, start, refresh, info
    pool = conn.storagePoolDefineXML(
        f"<pool type='hlfs'><name>{pool_name}</name>"
        f"<source><name>{pool_uri}</name></source></pool>", 0)
    check(pool.isPersistent() and not pool.isActive(), "defined pool is persistent and inactive")
    # The binding was generated from the patched API: it has the new flag.
    hlfs_pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_HLFS)
    check(pool_name in [p.name() for p in hlfs_pools], "listed with VIR_CONNECT_LIST_STORAGE_POOLS_HLFS")
    dir_pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_DIR)
    check(pool_name not in [p.name() for p in dir_pools], "not listed as a dir pool")
    check(not os.path.exists(pooldir), "pool dir does not exist before build")
    pool.build(0)
    check(os.path.isdir(pooldir), "build creates the pool directory")
    pool.create(0)
    check(pool.isActive(), "pool is active after create()")
    state, cap, alloc, avail = pool.info()
    check(state == libvirt.VIR_STORAGE_POOL_RUNNING, f"pool state {state}")
    st = os.statvfs(pooldir)
    check(cap == st.f_frsize * st.f_blocks, f"pool capacity {cap} is the file system's size")
    check(0 < avail <= cap, f"pool available {avail}")
    xml = pool.XMLDesc(0)
    check("<pool type='hlfs'>" in xml and f"<name>{pool_uri}</name>" in xml, f"pool XML: {xml}")
    ok(f"pool define/build/start: {pooldir}, capacity {cap}, state running, XML type hlfs, "
       "listed by VIR_CONNECT_LIST_STORAGE_POOLS_HLFS")

    cli("create", f"{pool_uri}/ext", "1M")
    check(pool.listVolumes() == [], "CLI-made volume not listed before refresh")
    pool.refresh(0)
    check(pool.listVolumes() == ["ext"], f"refresh lists the CLI-made volume: {pool.listVolumes()}")
    pool.storageVolLookupByName("ext").delete(0)
    ok("pool refresh picks up a volume made by the hlfs CLI")

    # volume: createXML, list, info, key/path, XMLDesc
    vol = pool.createXML(vol_xml("vm1", 1000000), 0)
    uri = f"hlfs:{pool_uri}/vm1"
    check(pool.listVolumes() == ["vm1"], f"listVolumes {pool.listVolumes()}")
    vtype, vcap, valloc = vol.info()
    check(vtype == libvirt.VIR_STORAGE_VOL_NETWORK, f"volume type {vtype}")
    check(vcap == 1000448, f"capacity {vcap} (1000000 rounded up to 512)")
    check(vol.key() == uri and vol.path() == uri, f"key {vol.key()} path {vol.path()}")
    vxml = vol.XMLDesc(0)
    check("<capacity unit='bytes'>1000448</capacity>" in vxml and "<format type='raw'/>" in vxml,
          f"volume XML: {vxml}")
    info = cli_info(uri)
    check(info["virtual_size"] == vcap and info["allocated_bytes"] == valloc,
          f"hlfs info agrees: {info['virtual_size']} {info['allocated_bytes']}")
    ok(f"createXML vm1: {vcap} bytes, key/path {uri}, list/info/XMLDesc agree with hlfs info")

    # resize: grow, shrink refused
    vol.resize(16 * MIB, 0)
    check(vol.info()[1] == 16 * MIB and cli_info(uri)["virtual_size"] == 16 * MIB, "resize to 16 MiB")
    msg = expect_error(lambda: vol.resize(8 * MIB, libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK),
                       "cannot shrink", "shrinking resize")
    check(vol.info()[1] == 16 * MIB, "size unchanged after refused shrink")
    ok(f"resize grows vm1 to 16 MiB; shrink refused: {msg}")

    # upload + download round trip
    data = os.urandom(5 * MIB + 3 * 512)
    upload(conn, vol, data)
    back = download(conn, vol)
    check(len(back) == 16 * MIB, f"download length {len(back)}")
    check(back[:len(data)] == data, "downloaded bytes equal the uploaded ones")
    check(back[len(data):] == bytes(16 * MIB - len(data)), "the rest reads zeros")
    check(cli("export", uri, "-") == back, "hlfs export agrees with the download")
    ok(f"upload {len(data)} random bytes, download 16 MiB back byte-exact (= hlfs export)")
    expect_error(lambda: upload(conn, vol, os.urandom(17 * MIB)), "", "upload of more than the volume holds")
    ok("upload of more data than the volume holds fails")
    msg = expect_error(lambda: vol.download(conn.newStream(0), 0, MIB, 0), "downloaded whole",
                       "partial download")
    ok(f"partial download refused: {msg}")

    # clone (createXMLFrom): same contents, isolated from later writes.
    # (The failed upload above has written the volume's first 16 MiB: read
    # what it holds now.)
    back = download(conn, vol)
    clone = pool.createXMLFrom(vol_xml("vm1-clone", 16 * MIB), vol, 0)
    check(sorted(pool.listVolumes()) == ["vm1", "vm1-clone"], f"list {pool.listVolumes()}")
    base = cli_info(f"{pool_uri}/vm1-clone")["base"]
    check(base.startswith(f"{pool_uri}/vm1%libvirt-clone-"), f"clone's base {base}")
    check(download(conn, clone) == back, "the clone has the source's contents")
    upload(conn, vol, os.urandom(MIB))
    check(download(conn, clone) == back, "writes to the source do not reach the clone")
    ok(f"createXMLFrom vm1-clone: clone of {base}, same contents, isolated from vm1's later writes")

    # wipe
    msg = expect_error(lambda: vol.wipePattern(libvirt.VIR_STORAGE_VOL_WIPE_ALG_RANDOM, 0),
                       "only support the 'zero' wipe algorithm", "wipe with the random algorithm")
    ok(f"wipe --algorithm random refused: {msg}")
    vol.wipe(0)
    check(download(conn, vol) == bytes(16 * MIB), "wiped volume reads zeros")
    check(download(conn, clone) == back, "wiping the source leaves the clone alone")
    ok("wipe: vm1 reads 16 MiB of zeros, the clone keeps its data")

    # delete refused while a clone exists
    msg = expect_error(lambda: vol.delete(0), "clones depend on its snapshots", "delete of a cloned volume")
    check(os.path.isdir(f"{pooldir}/vm1"), "vm1 still exists")
    ok(f"delete vm1 refused while vm1-clone exists: {msg}")
    clone.delete(0)
    vol.delete(0)
    check(pool.listVolumes() == [] and os.listdir(pooldir) == [], "all volumes deleted")
    ok("delete the clone, then the source: the pool is empty")

    # bad names: refused by the daemon, nothing on disk
    around = os.path.dirname(pooldir)
    before = sorted(os.listdir(around))
    for bad in BAD_NAMES:
        msg = expect_error(lambda: pool.createXML(vol_xml(bad, MIB), 0),
                           f"invalid HLFS volume name '{bad}'", f"volume name {bad!r}")
        ok(f"refused volume name {bad!r}: {msg}")
    check(os.listdir(pooldir) == [], f"nothing in the pool dir: {os.listdir(pooldir)}")
    check(sorted(os.listdir(around)) == before, "nothing next to the pool dir")
    check(pool.listVolumes() == [], "no volume listed")
    ok("no files created by the refused names")

    # pool: destroy, delete, undefine
    pool.destroy()
    check(not pool.isActive(), "pool inactive after destroy")
    pool.delete(0)
    check(not os.path.exists(pooldir), "pool delete removes the directory")
    pool.undefine()
    check(pool_name not in conn.listDefinedStoragePools(), "pool undefined")
    ok("pool destroy, delete (rmdir), undefine")


def main():
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = None
    pool_name = f"hlfs-py-{os.getpid()}"
    try:
        uri = env("HLFS_LIBVIRT_URI")
        own = os.path.join(env("HLFS_LIBVIRT_POOL_DIR"), "python")
        os.mkdir(own)
        conn = libvirt.open(uri)
        run(conn, pool_name, os.path.join(own, "pool"))
    except (CheckFailed, libvirt.libvirtError, OSError) as e:
        here = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
        where = f" (hlfs_pool.py line {here[-1].lineno}: {here[-1].line})" if here else ""
        print(f"FAIL {e}{where}", file=sys.stderr, flush=True)
        return 1
    finally:
        if conn is not None:
            try:
                pool = conn.storagePoolLookupByName(pool_name)
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
