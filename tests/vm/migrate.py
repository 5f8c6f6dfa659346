#!/usr/bin/env python3
"""Live migration between two QEMU processes sharing hlfs volumes.

The test guest boots from an hlfs volume (its root, imported) with a second
hlfs volume as /dev/vdb, on which fio writes 4 KiB random blocks with
O_DIRECT and verifies them as it goes (crc32c, verify_backlog) for the whole
run. The guest migrates back and forth between QEMU processes over a unix
socket: each destination is a new QEMU with -incoming, which opens the
volumes without their write lock; the source hands them over at the end
(bdrv_inactivate: flush, lock released) and the destination takes the lock
when it activates them. After each migration the lock sits with the running
QEMU (`hlfs info` names its pid) and the guest goes on writing.

Then:
  - a cancelled migration (bandwidth cut so it cannot finish first) leaves
    the source running, writable (fio goes on) and holding both locks;
  - a destination that cannot take the lock (late-block-activate, -S, and a
    qemu-io holding the volume in the window between hand-over and
    activation) stays paused: its `cont` fails naming the holder, and a
    `cont` after the holder is gone runs it;
  - fio finishes in the guest with 0 verify errors, and hlfs fsck passes.

Prints `migrate: N migrations, ...` and exits 1 on a failure.
"""

import json
import os
import re
import subprocess
import sys
import time

from vmcommon import Failure, Qemu, QmpError, arg_parser, guest_args, hlfs, setup  # noqa: E402


def log(msg):
    print(f"[migrate] {msg}", file=sys.stderr, flush=True)


class Vm(Qemu):
    n = 0

    def __init__(self, a, guest, uris, incoming=None, extra=()):
        Vm.n += 1
        self.mig = os.path.join(a.work, f"q{Vm.n}.mig")
        # One console file for the guest's whole life, across processes.
        log_path = os.path.join(a.work, "console.log")
        args = ["-chardev", f"file,id=con,path={log_path},append=on", "-serial", "chardev:con",
                *guest_args(guest, uris, a.cmd), *extra]
        if incoming:
            args += ["-incoming", f"unix:{self.mig}"]
        self.start(a, f"q{Vm.n}", args)


def console(a):
    with open(os.path.join(a.work, "console.log"), "rb") as f:
        return f.read().decode(errors="replace")




def writer_pid(a, uri):
    w = json.loads(hlfs(a, "info", "--output", "json", uri)).get("writer") or ""
    m = re.match(r"pid (\d+)", w)
    return int(m.group(1)) if m else None


def check_locks(a, uris, vm, what):
    for u in uris:
        pid = writer_pid(a, u)
        if pid != vm.p.pid:
            raise Failure(f"{what}: the write lock of {u} is held by pid {pid}, not by the running "
                          f"QEMU {vm.name} (pid {vm.p.pid})")


def fio_progress(a):
    """KiB fio has written so far (its last terse status line)."""
    kib = 0
    for line in console(a).splitlines():
        i = line.find("3;fio-")
        if i >= 0:
            f = line[i:].split(";")
            if len(f) > 47 and f[2] == "mig":
                kib = max(kib, int(f[46]))
    return kib


def wait_progress(a, since, timeout, what):
    deadline = time.monotonic() + timeout
    while fio_progress(a) <= since:
        if "fio-stream-end=mig" in console(a):
            raise Failure(f"{what}: fio ended before the test was done (make its runtime longer)")
        if time.monotonic() > deadline:
            raise Failure(f"{what}: fio made no progress in {timeout} s")
        time.sleep(0.2)


def migrate(a, guest, src, uris, extra=(), caps=None):
    dst = Vm(a, guest, uris, incoming=True, extra=extra)
    if caps:
        dst.qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": c, "state": True} for c in caps])
        src.qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": c, "state": True} for c in caps])
    t0 = time.monotonic()
    src.qmp.cmd("migrate", uri=f"unix:{dst.mig}")
    deadline = time.monotonic() + 300
    while True:
        st = src.qmp.cmd("query-migrate").get("status")
        if st == "completed":
            break
        if st in ("failed", "cancelled"):
            raise Failure(f"migration {src.name} -> {dst.name} {st}: "
                          f"{src.qmp.cmd('query-migrate').get('error-desc')}\n{dst.stderr()[-2000:]}")
        if time.monotonic() > deadline:
            raise Failure(f"migration {src.name} -> {dst.name} did not complete in 300 s ({st})")
        time.sleep(0.1)
    return dst, time.monotonic() - t0


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--migrations", type=int, default=20)
    ap.add_argument("--root", default="", help="directory URI for the volumes (default: local WORK)")
    a = ap.parse_args()
    root = a.root or f"local://{a.work}"
    guest = setup(a)
    if os.path.exists(os.path.join(a.work, "console.log")):
        os.unlink(os.path.join(a.work, "console.log"))
    uris = [f"{root}/root", f"{root}/data"]
    hlfs(a, "import", guest["disk"], uris[0])
    hlfs(a, "create", uris[1], "64M")
    # fio runs far longer than the test needs and is stopped by the
    # guest's own runtime; the test waits for its end.
    a.runtime = 60 + 6 * a.migrations
    spec = ("name=mig,rw=randwrite,bs=4k,size=48M,ioengine=psync,direct=1,verify=crc32c,"
            f"verify_backlog=128,verify_fatal=1,time_based=1,runtime={a.runtime}")
    a.cmd = "fio-stream:" + spec
    vms = []
    try:
        src = Vm(a, guest, uris)
        vms.append(src)
        deadline = time.monotonic() + 300
        while "fio-stream-begin=mig" not in console(a):
            if time.monotonic() > deadline or src.p.poll() is not None:
                raise Failure(f"fio did not start in the guest:\n{console(a)[-2000:]}\n{src.stderr()[-2000:]}")
            time.sleep(0.2)
        wait_progress(a, 0, 60, "before the first migration")
        check_locks(a, uris, src, "before migrating")
        times = []
        for i in range(a.migrations):
            kib = fio_progress(a)
            dst, secs = migrate(a, guest, src, uris)
            vms.append(dst)
            times.append(secs)
            if src.status() != "postmigrate":
                raise Failure(f"the source {src.name} is '{src.status()}' after migrating, not postmigrate")
            src.quit()
            vms.remove(src)
            deadline = time.monotonic() + 30
            while dst.status() != "running":
                if time.monotonic() > deadline:
                    raise Failure(f"{dst.name} is '{dst.status()}' after the migration")
                time.sleep(0.1)
            check_locks(a, uris, dst, f"after migration {i + 1}")
            wait_progress(a, kib, 60, f"after migration {i + 1}")
            src = dst
        times.sort()
        log(f"ok: {a.migrations} migrations, each to a new QEMU; the lock always with the running one; "
            f"median {times[len(times) // 2]:.1f} s")

        # A cancelled migration: the source stays running, writable, locked.
        dst = Vm(a, guest, uris, incoming=True)
        vms.append(dst)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=64 << 10)
        src.qmp.cmd("migrate", uri=f"unix:{dst.mig}")
        time.sleep(2)
        src.qmp.cmd("migrate_cancel")
        deadline = time.monotonic() + 60
        while src.qmp.cmd("query-migrate").get("status") != "cancelled":
            if time.monotonic() > deadline:
                raise Failure(f"migrate_cancel: status {src.qmp.cmd('query-migrate')}")
            time.sleep(0.1)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=0)
        if src.status() != "running":
            raise Failure(f"after a cancelled migration the source is '{src.status()}'")
        check_locks(a, uris, src, "after a cancelled migration")
        kib = fio_progress(a)
        wait_progress(a, kib, 60, "after a cancelled migration")
        dst.p.kill()
        dst.p.wait()
        vms.remove(dst)
        log("ok: a cancelled migration left the source running, writing and holding the locks")

        # A destination that cannot take the lock stays paused.
        dst, _ = migrate(a, guest, src, uris, extra=["-S"], caps=["late-block-activate"])
        vms.append(dst)
        holder = subprocess.Popen(
            [os.path.join(a.qemu_bin, "qemu-io"), f"hlfs:{uris[1]}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while writer_pid(a, uris[1]) != holder.pid:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise Failure(f"qemu-io did not take the lock of {uris[1]} after the hand-over")
            time.sleep(0.1)
        try:
            dst.qmp.cmd("cont")
            raise Failure("cont on a destination whose volume is locked elsewhere succeeded")
        except QmpError as e:
            msg = str(e)
        if not re.search(r"open read-write by pid %d" % holder.pid, msg):
            raise Failure(f"the destination's error does not name the holder: {msg}")
        if dst.status() == "running":
            raise Failure("the destination runs without its volume's lock")
        log(f"ok: the destination stays paused ({dst.status()}): {msg}")
        holder.stdin.close()
        holder.wait(timeout=60)
        dst.qmp.cmd("cont")
        deadline = time.monotonic() + 30
        while dst.status() != "running":
            if time.monotonic() > deadline:
                raise Failure(f"cont after the holder left: {dst.status()}")
            time.sleep(0.1)
        src.quit()
        vms.remove(src)
        check_locks(a, uris, dst, "after the late activation")
        kib = fio_progress(a)
        wait_progress(a, kib, 60, "after the late activation")
        log("ok: once the holder closed the volume, cont ran the destination")

        # fio's own verdict, then fsck.
        deadline = time.monotonic() + a.runtime + 300
        while "fio-stream-end=mig" not in console(a):
            if time.monotonic() > deadline or dst.p.poll() is not None:
                raise Failure(f"fio did not finish:\n{console(a)[-2000:]}")
            time.sleep(0.5)
        text = console(a)
        # verify_fatal: a block that fails its check ends fio with an error.
        if "fio-stream-end=mig rc=0" not in text or re.search(r"verify: bad|verify failed", text):
            raise Failure("fio in the guest failed or reported verify errors:\n"
                          + "\n".join(l for l in text.splitlines() if not l.startswith("3;"))[-3000:])
        dst.quit()
        vms.remove(dst)
        for u in uris:
            hlfs(a, "fsck", u)
        print(f"migrate: {a.migrations} migrations (median {times[len(times) // 2]:.1f} s), "
              f"{fio_progress(a) // 4} fio writes verified as they went, 0 verify errors; cancel and "
              f"locked-destination checks passed", flush=True)
    except (Failure, QmpError) as e:
        log(f"FAIL: {e}")
        for v in vms:
            v.p.kill()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
