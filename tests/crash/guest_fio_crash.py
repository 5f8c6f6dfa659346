#!/usr/bin/env python3
"""Crash loop with fio running inside a guest VM on an hlfs disk.

The test guest (tests/guest/) boots under the patched qemu-system-x86_64
with two virtio disks: its root (a raw copy, snapshot=on) and, as /dev/vdb,
an hlfs volume (hlfs:local://WORK/wN/vol, QEMU's default cache=writeback,
the driver's background cleaner on with small thresholds so it runs while
fio writes). Each boot (a "round"):

  1. verifies the previous round's acknowledged writes: fio's
     `verify_only` replays that round's write job (same seed, block size,
     pattern) for the first N writes and reads each one back with O_DIRECT;
     a block that does not hold that round's pattern and its own offset
     (`verify_pattern=0xPPPPPPPP%o`, a new pattern every round) is a lost
     write;
  2. starts a new write job: random writes (512 B to 64 KiB, each offset
     written once: fio's random map) with O_DIRECT|O_SYNC, so a write
     completes only after the guest kernel's flush reached the hlfs
     driver, and fio prints a status line every 250 ms saying how many
     KiB it has written (completed writes, counted by fio itself);
  3. QEMU gets SIGKILL at a random moment: mostly while fio writes, the
     rest during boot or the verification (which after a kill is the
     recovery open of the volume).

The ledger of a round is the last complete status line printed before the
kill: with one write in flight at a time (psync, iodepth 1) the first N
writes of the job's offset sequence all completed, and with O_SYNC all were
flushed. Each offset is written once per round and the pattern differs
from every earlier round's, so old data cannot pass for a lost write.

Every point must boot (the volume opens read-write after the kill) and
every verification must pass. At the end each volume gets a last,
unkilled verification and `hlfs fsck`, and a tamper check zeroes a volume
behind the ledger's back (qemu-io write -z) and requires the verification
to report every checked write as lost, so the checker is shown to be able
to fail.

Prints `crash points: N, writes checked: N, lost: N, unopenable: N` and
exits 0 only when nothing was lost and every boot and check worked.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from common import Failure, run

BLOCK_SIZES = [512, 4096, 4096, 4096, 16384, 65536]
STATUS_EVERY = 0.25  # fio-stream's --status-interval (tests/guest/guest-init.sh)
GUEST = "HLFS-GUEST: "



_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        print(f"[guest-fio-crash] {msg}", file=sys.stderr, flush=True)


class Shared:
    """Counters of all workers, and the stop flag."""

    def __init__(self):
        self.lock = threading.Lock()
        self.st = dict(
            crash_points=0, kills_writing=0, kills_booting=0, rounds=0,
            rounds_unkilled=0, writes_acked=0, writes_checked=0, lost=0,
            unopenable=0, verifications=0, log_shrank=0,
        )
        self.failed = None

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.st[k] += v

    def counts(self):
        s = self.st
        return (f"crash points: {s['crash_points']}, writes checked: {s['writes_checked']}, "
                f"lost: {s['lost']}, unopenable: {s['unopenable']}")


def fio_spec(job):
    """The guest's fio options (KEY=VAL,...) of a round's write job; the
    verification uses the same options, which fix the offsets and data."""
    return ",".join([
        "rw=randwrite", f"bs={job['bs']}", f"size={job['size']}", "ioengine=psync",
        "direct=1", "randrepeat=0", f"randseed={job['seed']}", "verify=pattern",
        f"verify_pattern=0x{job['pattern']:08x}%o",
    ])


def check_verify(text, where):
    """The verification's result in console TEXT, or None if it did not
    finish (killed). Returns (writes checked, lost)."""
    lost = len(re.findall(r"verify failed at file", text))
    m = re.search(r"HLFS-GUEST: fio-begin=verify\r?\n(.*?)HLFS-GUEST: fio-end=verify", text, re.S)
    if not m:
        if "HLFS-GUEST: error=fio-failed:verify" in text:
            raise Failure(f"fio's verification failed to run {where}:\n{text[-3000:]}")
        return None
    try:
        job = json.loads(m.group(1))["jobs"][0]
    except (ValueError, KeyError, IndexError) as e:
        raise Failure(f"fio's verification printed no readable JSON {where} ({e})")
    checked = job["read"]["total_ios"]
    lost = max(lost, job.get("total_err", 0))
    return checked, lost


def written_kib(text):
    """Writes completed by the round's fio job: its last complete status
    line before the kill (field 47: KiB written)."""
    kib = 0
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # cut by the kill
        i = line.find("3;fio-")
        if i < 0:
            continue
        f = line[i:].rstrip("\r\n").split(";")
        if len(f) < 100 or f[2] != "w":
            continue
        kib = max(kib, int(f[46]))
    return kib


class Worker:
    def __init__(self, idx, a, shared, guest):
        self.idx = idx
        self.a = a
        self.sh = shared
        self.guest = guest
        self.rng = random.Random(a.seed * 1009 + idx)
        self.dir = os.path.join(a.work, f"w{idx}")
        self.voldir = os.path.join(self.dir, "vol")
        self.uri = "local://" + self.voldir
        self.quri = "hlfs:" + self.uri
        self.root = os.path.join(self.dir, "root.raw")
        self.qemu = os.path.join(a.qemu_bin, "qemu-system-x86_64")
        self.ledger = None  # the write job whose first n writes must read back
        self.patterns = set()
        self.boot_est = 8.0  # seconds from QEMU start to fio writing, learnt
        self.last_log_bytes = 0
        self.points = 0

    # --- helpers -------------------------------------------------------------

    def new_job(self):
        bs = self.rng.choice(BLOCK_SIZES)
        while True:
            pattern = self.rng.randrange(1, 1 << 32)
            if pattern not in self.patterns:
                break
        self.patterns.add(pattern)
        return dict(bs=bs, size=self.a.size, seed=self.rng.randrange(1, 1 << 31), pattern=pattern, n=0)

    def log_bytes(self):
        total = 0
        for f in os.listdir(self.voldir):
            if f.startswith("seg-") and len(f) == 20:
                try:
                    total += os.path.getsize(os.path.join(self.voldir, f))
                except FileNotFoundError:
                    pass
        return total

    def boot(self, cmds, kill_at=None, kill_after_write=None, name="round"):
        """Boots the guest with fw_cfg command CMDS (joined by ';'). kill_at:
        SIGKILL this many seconds after start; kill_after_write: this many
        seconds after fio started writing. Returns (console text, killed,
        QEMU's exit code, its stderr, seconds until fio started writing)."""
        logf = os.path.join(self.dir, f"{name}.log")
        errf = os.path.join(self.dir, f"{name}.err")
        cmd = ";".join(cmds).replace(",", ",,")
        g = self.guest
        args = [self.qemu, "-m", "256", *self.a.accel_args, "-display", "none", "-nic", "none",
                "-no-reboot", "-monitor", "none", "-serial", f"file:{logf}",
                "-drive", f"file={self.root},if=virtio,format=raw,snapshot=on",
                "-drive", f"file={self.quri},if=virtio",
                "-kernel", g["kernel"], "-initrd", g["initrd"], "-append", g["cmdline"],
                "-fw_cfg", f"name=opt/hlfs/cmd,string={cmd}"]
        env = dict(os.environ, HLFS_GC_INTERVAL="1", HLFS_GC_RATIO="1.2", HLFS_GC_MIN_DEAD="2M")
        open(logf, "w").close()
        with open(errf, "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
            killed = False
            write_start = None
            deadline = t0 + self.a.boot_timeout
            while p.poll() is None:
                now = time.monotonic()
                if write_start is None and kill_after_write is not None:
                    with open(logf, "rb") as f:
                        if b"HLFS-GUEST: fio-stream-begin=" in f.read():
                            write_start = now - t0
                if (kill_at is not None and now - t0 >= kill_at) or (
                        write_start is not None and now - t0 >= write_start + kill_after_write):
                    p.send_signal(signal.SIGKILL)
                    killed = True
                    p.wait()
                    break
                if now > deadline:
                    p.kill()
                    p.wait()
                    raise Failure(f"the guest did not finish within {self.a.boot_timeout} s "
                                  f"(console: {logf})")
                time.sleep(0.02)
        with open(logf, "rb") as f:
            text = f.read().decode(errors="replace")
        with open(errf, "rb") as f:
            errtext = f.read().decode(errors="replace")
        return text, killed, p.returncode, errtext, write_start

    def open_failed(self, errtext):
        """QEMU's stderr says the hlfs drive did not open (QEMU names the
        -drive option whose open failed)."""
        return f"-drive file={self.quri}" in errtext

    # --- the checks ----------------------------------------------------------

    def verify_cmd(self):
        j = self.ledger
        return (f"fio:name=verify,{fio_spec(j)},number_ios={j['n']},verify_only=1,"
                "verify_fatal=0,continue_on_error=verify")

    def check_verify(self, text, where):
        return check_verify(text, where)

    def written(self, text):
        return written_kib(text)

    def round(self, final=False):
        """One boot: verify the ledger, start a new write job, kill."""
        cmds = []
        verifying = self.ledger is not None and self.ledger["n"] > 0
        if verifying:
            cmds.append(self.verify_cmd())
        job = None
        kill_at = kill_after_write = None
        if not final:
            job = self.new_job()
            cmds.append(f"fio-stream:name=w,{fio_spec(job)},sync=1,do_verify=0,"
                        f"number_ios={job['size'] // job['bs']}")
            if self.rng.random() < self.a.boot_kill_share:
                kill_at = self.rng.uniform(0.3, self.boot_est)
            else:
                kill_after_write = self.rng.uniform(0.0, self.a.max_write_secs)
        name = "final" if final else "round"
        text, killed, rc, errtext, write_start = self.boot(cmds, kill_at, kill_after_write, name)
        where = f"(worker {self.idx}, point {self.points}, console {self.dir}/{name}.log)"
        if not killed:
            if rc != 0 or "HLFS-GUEST: poweroff" not in text:
                if self.open_failed(errtext):
                    self.sh.add(unopenable=1)
                raise Failure(f"QEMU exited {rc} without the guest powering off {where}:\n"
                              f"{errtext[-2000:]}\n--- console ---\n{text[-2000:]}")
            errs = re.findall(r"HLFS-GUEST: error=\S+", text)
            if errs:
                raise Failure(f"the guest reported {errs} {where}:\n{text[-3000:]}")
        elif self.open_failed(errtext):
            self.sh.add(unopenable=1)
            raise Failure(f"QEMU could not open the volume after a kill {where}:\n{errtext[-2000:]}")
        if write_start is not None:
            self.boot_est = 0.8 * self.boot_est + 0.2 * write_start
        if verifying:
            res = self.check_verify(text, where)
            if res is None and not killed:
                raise Failure(f"the verification did not finish {where}:\n{text[-3000:]}")
            if res is not None:
                checked, lost = res
                self.sh.add(verifications=1, writes_checked=checked, lost=lost)
                if lost or checked != self.ledger["n"]:
                    raise Failure(
                        f"{lost} of {self.ledger['n']} acknowledged writes did not read back "
                        f"(fio read {checked}) {where}; job {self.ledger}:\n"
                        + "\n".join(l for l in text.splitlines() if "verify" in l)[:4000])
        if job is not None and "HLFS-GUEST: fio-stream-begin=w" in text:
            # This round's writes may have landed over the old ledger's.
            job["n"] = self.written(text) * 1024 // job["bs"]
            self.ledger = job
            self.sh.add(writes_acked=job["n"])
        self.sh.add(rounds=1)
        if killed:
            self.points += 1
            self.sh.add(crash_points=1, kills_writing=int(kill_after_write is not None),
                        kills_booting=int(kill_at is not None))
        else:
            self.sh.add(rounds_unkilled=1)
        lb = self.log_bytes()
        if lb < self.last_log_bytes:
            self.sh.add(log_shrank=1)
        self.last_log_bytes = lb
        return killed

    def tamper_check(self):
        """Zeroes the volume behind the ledger's back: the verification must
        report every write it checks as lost."""
        n = self.ledger["n"]
        qemu_io = os.path.join(self.a.qemu_bin, "qemu-io")
        run([qemu_io, "-c", f"write -z 0 {self.a.size}", "-c", "flush", self.quri])
        text, _, rc, errtext, _ = self.boot([self.verify_cmd()], name="tamper")
        res = self.check_verify(text, "(tamper check)")
        if res is None:
            raise Failure(f"the tamper check's verification did not run (QEMU exited {rc}):\n"
                          f"{errtext[-2000:]}\n{text[-2000:]}")
        checked, lost = res
        if checked != n or lost != n:
            raise Failure(f"after zeroing the volume the checker reported {lost} of {n} writes lost "
                          f"(read {checked}); it must report all of them")
        log(f"ok: the checker reports all {n} writes lost after the volume is zeroed behind its back")

    def main(self, points):
        os.makedirs(self.dir, exist_ok=True)
        shutil.rmtree(self.voldir, ignore_errors=True)
        run(["cp", "--sparse=always", self.guest["disk"], self.root])
        run([self.a.cli, "create", self.uri, str(self.a.size)])
        while self.points < points:
            if self.sh.failed:
                return
            self.round()
            if self.idx == 0 and self.points and self.points % self.a.progress == 0:
                log(f"{self.sh.st['crash_points']} points in {time.monotonic() - self.sh.t0:.0f} s: "
                    f"{self.sh.counts()}")
        # A last boot that is not killed checks the last round.
        while self.ledger is None or self.ledger["n"] == 0:
            self.round()  # (rare) no write job got going before its kill
        self.round(final=True)
        rc, out = run([self.a.cli, "fsck", self.uri], ok=None)
        if rc != 0:
            raise Failure(f"hlfs fsck {self.uri} exited {rc}:\n{out}")
        log(f"worker {self.idx}: ok: final verification and hlfs fsck pass")
        if self.idx == 0:
            self.tamper_check()


def guest_build(a):
    out = subprocess.run([a.build_guest], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out.returncode != 0:
        sys.exit(f"tests/guest/build-guest.sh failed:\n{out.stderr.decode(errors='replace')}")
    kv = dict(l.split("=", 1) for l in out.stdout.decode().splitlines() if "=" in l)
    return dict(kernel=kv.get("VMLINUX") or kv["KERNEL"], initrd=kv["INITRD"], disk=kv["DISK"],
                cmdline=kv["CMDLINE"].replace("root=LABEL=hlfs-root", "root=/dev/vda2"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu-bin", required=True, help="dir with the patched qemu-system-x86_64 and qemu-io")
    ap.add_argument("--cli", required=True, help="the hlfs binary")
    ap.add_argument("--build-guest", required=True, help="tests/guest/build-guest.sh")
    ap.add_argument("--work", required=True, help="scratch directory (the volumes live here)")
    ap.add_argument("--points", type=int, default=6, help="crash points in all (default 6)")
    ap.add_argument("--parallel", type=int, default=1, help="guests at a time, each with its own volume")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--size", type=int, default=64 << 20, help="volume size in bytes (default 64 MiB)")
    ap.add_argument("--accel", default="tcg", choices=["kvm", "tcg"])
    ap.add_argument("--max-write-secs", type=float, default=3.0,
                    help="kill at most this long after fio started writing (default 3)")
    ap.add_argument("--boot-kill-share", type=float, default=0.15,
                    help="share of points killed during boot/verification instead (default 0.15)")
    ap.add_argument("--boot-timeout", type=float, default=300, help="seconds a boot may take")
    ap.add_argument("--progress", type=int, default=25, help="log counts every N points (worker 0)")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    if a.size % 65536 or a.size < (16 << 20):
        ap.error("--size must be a multiple of 64 KiB and at least 16 MiB")
    if a.points < 1 or a.parallel < 1:
        ap.error("--points and --parallel must be at least 1")
    for t in ("qemu-system-x86_64", "qemu-io"):
        if not os.access(os.path.join(a.qemu_bin, t), os.X_OK):
            ap.error(f"no {t} in --qemu-bin {a.qemu_bin}")
    a.accel_args = ["-accel", "kvm", "-cpu", "host"] if a.accel == "kvm" else ["-accel", "tcg"]
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    guest = guest_build(a)
    sh = Shared()
    sh.t0 = time.monotonic()
    log(f"seed {a.seed}, {a.points} crash points, {a.parallel} guest(s) at a time, "
        f"{a.size >> 20} MiB volumes, accel {a.accel}")
    workers = [Worker(i, a, sh, guest) for i in range(a.parallel)]
    share = [a.points // a.parallel + (i < a.points % a.parallel) for i in range(a.parallel)]

    def run(w, n):
        try:
            w.main(n)
        except Failure as e:
            with sh.lock:
                if not sh.failed:
                    sh.failed = f"worker {w.idx}, crash point {w.points}: {e}"
        except Exception as e:  # a bug in the harness is a failure too
            with sh.lock:
                sh.failed = sh.failed or f"worker {w.idx}: {type(e).__name__}: {e}"

    threads = [threading.Thread(target=run, args=(w, n)) for w, n in zip(workers, share) if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sh.counts(), flush=True)
    details = ", ".join(f"{k}={v}" for k, v in sh.st.items())
    log(f"{time.monotonic() - sh.t0:.0f} s; {details}")
    if sh.failed:
        log(f"FAIL (seed {a.seed}): {sh.failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
