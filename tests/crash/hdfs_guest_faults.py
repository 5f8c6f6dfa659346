#!/usr/bin/env python3
"""Faults of a real HDFS under a running guest whose disk is on it.

The test guest (tests/guest/) boots under the patched qemu-system-x86_64
with its root on a local raw copy (snapshot=on) and, as /dev/vdb, an hlfs
volume on a MiniDFSCluster of tests/hdfs (4 DataNodes, replication 3).
In each scenario fio in the guest writes with O_DIRECT|O_SYNC (every write
is flushed through the driver, so hsynced, before fio counts it) random
64 KiB blocks, each offset once, with a pattern that names the round and
the offset (`verify_pattern=0xPPPPPPPP%o`), while the harness breaks HDFS
under it:

  datanodes  two of the four DataNodes stop mid-write (so at least one of
             the writer's pipeline), and start again 8 s later: the guest
             must see no error (rerror/werror=report would fail fio's job)
             and QEMU must report no I/O error;
  failover   an HA pair of NameNodes fails over mid-write (twice): the same;
  namenode   the only NameNode stops for longer than the retry window
             (HLFS_HDFS_TIMEOUT=2, so 6 s): with werror=stop the VM pauses
             (query-status io-error), a `cont` while the NameNode is still
             down pauses it again, and once the NameNode is back `cont`
             resumes it and fio finishes;
  quota      a space quota on the volume's directory is reached: QEMU gets
             ENOSPC and pauses the VM (io-status nospace); once the quota is
             raised, `cont` resumes it and fio finishes;
  kill       QEMU is killed with SIGKILL mid-write on one host, and the
             volume is taken over from another: with --host-a/--host-b
             (command prefixes that run a command in one of two network
             namespaces with host names of their own, tests/lib/netns.sh)
             and --bind (the cluster's address both reach), the writer runs
             on host A; host B breaks its lock (`hlfs unlock`, as an admin
             does once the other host is known dead: a lock held from
             another host is never presumed dead) and its QEMU opens the
             volume, recovering the dead writer's HDFS leases. Without them,
             a second QEMU on this host takes over (a dead local holder).

After each scenario a fresh QEMU boots and fio's `verify_only` replays the
job and reads every write back: the writes fio completed (all of them, or
for `kill` the count in fio's last status line before the kill) must all
hold their pattern. Then `hlfs fsck` checks the volume, and once a tamper
check zeroes a volume behind the checker's back and requires every write to
be reported lost, so the checker is shown to be able to fail.

Prints one line per scenario, `SCENARIO: writes verified N, lost 0`, and
exits 0 only if every scenario passed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from common import Failure, run
from guest_fio_crash import check_verify, fio_spec, guest_build, written_kib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qmpclient import Qmp, QmpError  # noqa: E402

SCENARIOS = ["datanodes", "failover", "namenode", "quota", "kill"]
BS = 64 << 10


def log(msg):
    print(f"[hdfs-guest-faults] {msg}", file=sys.stderr, flush=True)


class Cluster:
    """A MiniDFSCluster of tests/hdfs/cluster.sh, started for this run."""

    def __init__(self, script, path, ha, bind=None):
        self.script, self.dir, self.ha = script, path, ha
        shutil.rmtree(path, ignore_errors=True)
        args = ["bash", script, "start", path] + (["--ha"] if ha else []) + (["--bind", bind] if bind else [])
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise Failure(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout.decode(errors='replace')}")
        with open(os.path.join(path, "uri")) as f:
            self.uri = f.read().strip()
        self.conf = os.path.join(path, "conf")

    def cmd(self, line):
        rc, out = run(["bash", self.script, "cmd", self.dir, line])
        if not out.strip().splitlines() or not out.strip().splitlines()[-1].startswith("ok"):
            raise Failure(f"cluster command '{line}' answered: {out}")
        log(f"cluster ({'HA' if self.ha else 'one NameNode'}): {line}: {out.strip().splitlines()[-1]}")
        return out

    def stop(self):
        subprocess.run(["bash", self.script, "stop", self.dir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Vm:
    """One boot of the test guest with the hlfs disk DRIVE."""

    def __init__(self, h, name, drive, cmds, env, prefix=None):
        self.h, self.name = h, name
        self.log = os.path.join(h.work, f"{name}.log")
        self.err = os.path.join(h.work, f"{name}.err")
        self.sock = os.path.join(h.work, f"{name}.qmp")
        for p in (self.log, self.sock):
            if os.path.exists(p):
                os.unlink(p)
        open(self.log, "w").close()
        g = h.guest
        cmd = ";".join(cmds).replace(",", ",,")
        args = [os.path.join(h.a.qemu_bin, "qemu-system-x86_64"), "-m", "256", *h.accel,
                "-display", "none", "-nic", "none", "-no-reboot", "-monitor", "none",
                "-qmp", f"unix:{self.sock},server=on,wait=off", "-serial", f"file:{self.log}",
                "-drive", f"file={h.root},if=virtio,format=raw,snapshot=on",
                "-drive", f"{drive},if=virtio,id=data",
                "-kernel", g["kernel"], "-initrd", g["initrd"], "-append", g["cmdline"],
                "-fw_cfg", f"name=opt/hlfs/cmd,string={cmd}"]
        args = list(prefix or []) + args
        self.errf = open(self.err, "wb")
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf,
                                  env=dict(os.environ, **env))
        self.t0 = time.monotonic()
        self.qmp = Qmp(self.sock)

    def console(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def where(self):
        return f"(console {self.log}, stderr {self.err})"

    def wait_console(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.console():
            if self.p.poll() is not None:
                raise Failure(f"QEMU exited {self.p.returncode} before '{marker}' {self.where()}:\n"
                              f"{self.stderr()[-2000:]}\n{self.console()[-2000:]}")
            if time.monotonic() > deadline:
                raise Failure(f"no '{marker}' within {timeout} s {self.where()}:\n{self.console()[-2000:]}")
            time.sleep(0.1)

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def wait_status(self, want, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.p.poll() is not None:
                raise Failure(f"QEMU exited {self.p.returncode} while waiting for status {want} "
                              f"{self.where()}:\n{self.console()[-2000:]}")
            s = self.status()
            if s == want:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise Failure(f"VM status {s}, not {want}, after {timeout} s {self.where()}")
            time.sleep(0.2)

    def io_status(self):
        for b in self.qmp.cmd("query-block"):
            if b["device"] == "data":
                return b.get("io-status", "none")
        raise Failure("query-block lists no 'data' disk")

    def wait_exit(self, timeout):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"the guest did not finish within {timeout} s (status {self.status()}) "
                          f"{self.where()}:\n{self.console()[-2000:]}")
        self.errf.close()
        return rc

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self.errf.close()

    def stderr(self):
        with open(self.err, "rb") as f:
            return f.read().decode(errors="replace")


class Harness:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.rng = random.Random(a.seed)
        self.guest = guest_build(a)
        self.root = os.path.join(self.work, "root.raw")
        run(["cp", "--sparse=always", self.guest["disk"], self.root])
        self.accel = ["-accel", "kvm", "-cpu", "host"] if a.accel == "kvm" else ["-accel", "tcg"]
        self.patterns = set()
        self.results = {}

    def new_job(self):
        while True:
            pattern = self.rng.randrange(1, 1 << 32)
            if pattern not in self.patterns:
                break
        self.patterns.add(pattern)
        return dict(bs=BS, size=self.a.size, seed=self.rng.randrange(1, 1 << 31), pattern=pattern,
                    n=0)

    def hlfs(self, env, *args, prefix=None):
        p = subprocess.run([*(prefix or []), self.a.cli, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=dict(os.environ, **env))
        out = p.stdout.decode(errors="replace")
        if p.returncode != 0:
            raise Failure(f"hlfs {' '.join(args)} exited {p.returncode}:\n{out}")
        return out

    def write_vm(self, name, cluster, uri, job, drive_opts="", env=None, prefix=None):
        """Boots the guest with fio writing JOB's whole size (each offset once)."""
        env = dict(env or {}, HADOOP_CONF_DIR=cluster.conf)
        spec = (f"fio-stream:name=w,{fio_spec(job)},sync=1,do_verify=0,"
                f"number_ios={job['size'] // job['bs']}")
        vm = Vm(self, name, f"file=hlfs:{uri}{drive_opts}", [spec], env, prefix)
        vm.wait_console("HLFS-GUEST: fio-stream-begin=w", self.a.boot_timeout)
        vm.fio_began = time.monotonic()
        return vm

    def finish_write(self, vm, job, expect_events_ok=True):
        """Waits for the guest to power off; fio's job must have completed
        every write without an error. Returns the writes completed."""
        rc = vm.wait_exit(self.a.job_timeout)
        text = vm.console()
        if rc != 0 or "HLFS-GUEST: poweroff" not in text:
            raise Failure(f"QEMU exited {rc} without the guest powering off {vm.where()}:\n"
                          f"{vm.stderr()[-2000:]}\n{text[-2000:]}")
        if "HLFS-GUEST: fio-stream-end=w rc=0" not in text:
            raise Failure(f"fio's write job failed in the guest {vm.where()}:\n"
                          + "\n".join(l for l in text.splitlines() if not l.startswith("3;"))[-3000:])
        n = written_kib(text) * 1024 // job["bs"]
        total = job["size"] // job["bs"]
        if n != total:
            raise Failure(f"fio completed {n} of {total} writes {vm.where()}")
        log(f"{vm.name}: fio wrote all {n} writes in {time.monotonic() - vm.fio_began:.0f} s")
        return n

    def verify(self, name, cluster, uri, job, env=None, prefix=None):
        """A fresh QEMU reads back the first job['n'] writes of JOB."""
        env = dict(env or {}, HADOOP_CONF_DIR=cluster.conf)
        cmd = (f"fio:name=verify,{fio_spec(job)},number_ios={job['n']},verify_only=1,"
               "verify_fatal=0,continue_on_error=verify")
        vm = Vm(self, f"{name}-verify", f"file=hlfs:{uri}", [cmd], env, prefix)
        rc = vm.wait_exit(self.a.boot_timeout + self.a.job_timeout)
        text = vm.console()
        if rc != 0 or "HLFS-GUEST: poweroff" not in text:
            raise Failure(f"the verifying QEMU exited {rc} {vm.where()}:\n{vm.stderr()[-2000:]}\n"
                          f"{text[-2000:]}")
        res = check_verify(text, vm.where())
        if res is None:
            raise Failure(f"the verification did not finish {vm.where()}:\n{text[-3000:]}")
        return res

    def check(self, name, cluster, uri, job, env=None, prefix=None):
        checked, lost = self.verify(name, cluster, uri, job, env, prefix)
        if lost or checked != job["n"]:
            raise Failure(f"{name}: {lost} of {job['n']} acknowledged writes did not read back "
                          f"(fio read {checked}); job {job}")
        self.hlfs({"HADOOP_CONF_DIR": cluster.conf, **(env or {})}, "fsck", uri, prefix=prefix)
        self.results[name] = job["n"]
        print(f"{name}: writes verified {job['n']}, lost 0", flush=True)

    def no_io_errors(self, vm):
        ev = vm.qmp.event_names()
        bad = [e for e in ev if e in ("BLOCK_IO_ERROR", "STOP")]
        if bad:
            raise Failure(f"{vm.name}: QEMU reported {bad} (events {ev}); the guest must see no error")

    # --- the scenarios ------------------------------------------------------

    def datanodes(self, c):
        uri = f"{c.uri}/hlfs-faults-{self.a.seed}/datanodes"
        self.hlfs({"HADOOP_CONF_DIR": c.conf}, "create", uri, str(self.a.vol_size))
        job = self.new_job()
        vm = self.write_vm("datanodes", c, uri, job, ",rerror=report,werror=report")
        time.sleep(2)
        c.cmd("stop-datanode 0")
        c.cmd("stop-datanode 1")
        time.sleep(8)
        c.cmd("start-datanode 0")
        c.cmd("start-datanode 1")
        job["n"] = self.finish_write(vm, job)
        self.no_io_errors(vm)
        self.check("datanodes", c, uri, job)

    def failover(self, c):
        uri = f"{c.uri}/hlfs-faults-{self.a.seed}/failover"
        self.hlfs({"HADOOP_CONF_DIR": c.conf}, "create", uri, str(self.a.vol_size))
        job = self.new_job()
        vm = self.write_vm("failover", c, uri, job, ",rerror=report,werror=report")
        time.sleep(2)
        c.cmd("failover")
        time.sleep(6)
        c.cmd("failover")
        job["n"] = self.finish_write(vm, job)
        self.no_io_errors(vm)
        self.check("failover", c, uri, job)

    def namenode(self, c):
        uri = f"{c.uri}/hlfs-faults-{self.a.seed}/namenode"
        self.hlfs({"HADOOP_CONF_DIR": c.conf}, "create", uri, str(self.a.vol_size))
        job = self.new_job()
        vm = self.write_vm("namenode", c, uri, job, ",rerror=stop,werror=stop",
                           env={"HLFS_HDFS_TIMEOUT": "2"})
        time.sleep(1)
        c.cmd("stop-namenode")
        down = time.monotonic()
        try:
            # The guest's writes go on (an hsync needs only the DataNodes)
            # until one needs the NameNode: a new segment at the roll.
            paused = vm.wait_status("io-error", self.a.job_timeout)
            log(f"namenode: the VM paused {paused - down:.0f} s after the NameNode stopped "
                f"(io-status {vm.io_status()})")
            vm.qmp.cmd("cont")
            time.sleep(1)
            vm.wait_status("io-error", 60)
            log("namenode: cont with the NameNode still down pauses the VM again")
        finally:
            c.cmd("start-namenode")
        vm.qmp.cmd("cont")
        job["n"] = self.finish_write(vm, job)
        self.check("namenode", c, uri, job)

    def quota(self, c):
        base = f"/hlfs-faults-{self.a.seed}/quota"
        uri = f"{c.uri}{base}/vol"
        self.hlfs({"HADOOP_CONF_DIR": c.conf}, "create", uri, str(self.a.vol_size))
        # HDFS charges a block being written its full size times the
        # replication (128 MiB × 3) against the quota: the first segment
        # fits in 500 MiB, the second segment's block does not once the
        # first (64 MiB × 3) is closed.
        c.cmd(f"quota {base} {500 << 20}")
        job = self.new_job()
        vm = self.write_vm("quota", c, uri, job, ",rerror=stop,werror=stop")
        try:
            vm.wait_status("io-error", self.a.job_timeout)
            st = vm.io_status()
            if st != "nospace":
                raise Failure(f"quota: the VM paused with io-status {st}, expected nospace")
            log("quota: the VM paused on the quota (io-status nospace)")
        finally:
            c.cmd(f"quota {base} none")
        vm.qmp.cmd("cont")
        job["n"] = self.finish_write(vm, job)
        self.check("quota", c, uri, job)

    def kill(self, c):
        uri = f"{c.uri}/hlfs-faults-{self.a.seed}/kill"
        self.hlfs({"HADOOP_CONF_DIR": c.conf}, "create", uri, str(self.a.vol_size))
        job = self.new_job()
        a = self.a
        # Each host its own index cache (they share this file system).
        env_a = {"HLFS_INDEX_DIR": os.path.join(self.work, "index-a")} if a.host_a else {}
        env_b = {"HLFS_INDEX_DIR": os.path.join(self.work, "index-b")} if a.host_b else {}
        vm = self.write_vm("kill", c, uri, job, env=env_a, prefix=a.host_a)
        time.sleep(self.rng.uniform(3, 8))
        vm.kill()
        job["n"] = written_kib(vm.console()) * 1024 // job["bs"]
        log(f"kill: SIGKILL after {job['n']} acknowledged writes"
            + (" on host A" if a.host_a else ""))
        if job["n"] == 0:
            raise Failure("kill: fio had completed no write before the kill; nothing to check")
        t0 = time.monotonic()
        if a.host_b:
            out = self.hlfs({"HADOOP_CONF_DIR": c.conf, **env_b}, "unlock", uri, prefix=a.host_b)
            log(f"kill: host B: hlfs unlock: {out.strip().splitlines()[-1] if out.strip() else 'ok'}")
        self.check("kill", c, uri, job, env_b, a.host_b)
        log(f"kill: {'host B' if a.host_b else 'the next QEMU'} took the volume over and verified it "
            f"in {time.monotonic() - t0:.0f} s")
        self.tamper(c, uri, job)

    def tamper(self, c, uri, job):
        """Zeroes the volume behind the checker's back: every write it
        checks must be reported lost."""
        qemu_io = os.path.join(self.a.qemu_bin, "qemu-io")
        env = {"HADOOP_CONF_DIR": c.conf}
        p = subprocess.run([qemu_io, "-c", f"write -z 0 {self.a.size}", "-c", "flush", f"hlfs:{uri}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, **env))
        if p.returncode != 0:
            raise Failure(f"tamper: qemu-io exited {p.returncode}: {p.stdout.decode(errors='replace')}")
        checked, lost = self.verify("tamper", c, uri, job)
        if checked != job["n"] or lost != job["n"]:
            raise Failure(f"after zeroing the volume the checker reported {lost} of {job['n']} writes "
                          f"lost (read {checked}); it must report all of them")
        log(f"ok: the checker reports all {job['n']} writes lost after the volume is zeroed behind its back")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu-bin", required=True, help="dir with the patched qemu-system-x86_64 and qemu-io")
    ap.add_argument("--cli", required=True, help="the hlfs binary")
    ap.add_argument("--build-guest", required=True, help="tests/guest/build-guest.sh")
    ap.add_argument("--cluster", required=True, help="tests/hdfs/cluster.sh")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, of {','.join(SCENARIOS)} (default: all)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--size", type=int, default=192 << 20, help="bytes fio writes (default 192 MiB)")
    ap.add_argument("--accel", default="tcg", choices=["kvm", "tcg"])
    ap.add_argument("--host-a", default="[]",
                    help="JSON list: the command prefix that runs a command on host A (kill scenario)")
    ap.add_argument("--host-b", default="[]",
                    help="JSON list: the same for host B, which takes the volume over")
    ap.add_argument("--bind", default="",
                    help="address the kill scenario's cluster listens on, reachable from both hosts")
    ap.add_argument("--boot-timeout", type=float, default=300, help="seconds a boot may take")
    ap.add_argument("--job-timeout", type=float, default=600, help="seconds fio's job may take")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    scenarios = [s for s in a.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {SCENARIOS}")
    if a.size % BS:
        ap.error("--size must be a multiple of 64 KiB")
    a.vol_size = a.size + (64 << 20)
    a.host_a, a.host_b = json.loads(a.host_a), json.loads(a.host_b)
    if bool(a.host_a) != bool(a.host_b) or bool(a.host_a) != bool(a.bind):
        ap.error("--host-a, --host-b and --bind go together")
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    h = Harness(a)
    log(f"seed {a.seed}, scenarios {scenarios}, fio writes {a.size >> 20} MiB, accel {a.accel}")
    clusters = {}
    failed = None
    try:
        for s in scenarios:
            kind = "ha" if s == "failover" else "bound" if s == "kill" and a.bind else "one"
            if kind not in clusters:
                t0 = time.monotonic()
                clusters[kind] = Cluster(a.cluster, os.path.join(a.work, kind), kind == "ha",
                                         a.bind if kind == "bound" else None)
                log(f"cluster {clusters[kind].uri} up in {time.monotonic() - t0:.0f} s")
            t0 = time.monotonic()
            getattr(h, s)(clusters[kind])
            log(f"{s}: passed in {time.monotonic() - t0:.0f} s")
    except (Failure, QmpError) as e:
        failed = str(e)
    finally:
        for c in clusters.values():
            c.stop()
    if failed:
        log(f"FAIL (seed {a.seed}): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
