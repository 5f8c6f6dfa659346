#!/usr/bin/env python3
"""Crash loop through the patched QEMU: SIGKILL at random moments, then check.

One volume (hlfs:local://WORK/vol) is written by a long-running `qemu-io`
fed through a pipe: pattern writes (`write -P`), write-zeroes, discards,
batches of concurrent `aio_write`s, and `flush`es. qemu-io prints its prompt
(and flushes stdout) after every command returns, so the number of prompts
read says exactly which commands have completed. At a random moment (at a
random command boundary plus a random delay, or during the open itself,
which after a crash is recovery) the process gets SIGKILL.

The ledger then knows, for every 512-byte sector:
  - its durable value: the last write that completed before a `flush` that
    completed (qemu-io printed the prompt after it);
  - the values it may have instead: every write issued after that flush (an
    acknowledged write not covered by a flush may or may not have landed,
    and the write in flight may have landed in part, block by block).
The volume is then read through a read-only open (`qemu-img convert` to a
raw file) and every sector must be uniform and hold one of its allowed
values; anything else counts the write that owned the sector as lost. The
next qemu-io session opens the volume read-write (stale-lock takeover, index
rebuild) and first re-reads (a sample of) the state just observed with
`read -P`, so the read-write open is checked against the read-only one.

About a quarter of the crash points instead kill a metadata command on the
volume (which qemu-io does not hold then): `hlfs snapshot create|revert|
delete`, `hlfs clone`, `hlfs gc` (the segment cleaner), `qemu-img snapshot
-c|-a|-d` or `qemu-img create -b` (clone). After the kill the volume must open; every snapshot must exist
with its contents; the operation must have happened whole or not at all (a
snapshot exists with the head's contents or does not exist; a reverted head
equals the snapshot, and the replaced head survives as a snapshot; a clone
reads as its snapshot or does not exist).

At the end `hlfs fsck` must pass, and a tamper check writes one sector
behind the ledger's back and requires the checker to report it, so the
checker is shown to be able to fail.

Prints `crash points: N, writes checked: N, lost: N, unopenable: N` and
exits 0 only when nothing was lost, every open worked and every check
passed.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

from common import Failure, run

SECTOR = 512
PROMPT = b"qemu-io> "
MAX_SNAPS = 4
RW_CHECK_RUNS = 300  # runs of equal sectors re-read by each read-write open



def log(msg):
    print(f"[crashloop] {msg}", file=sys.stderr, flush=True)


class Loop:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.qemu_io = os.path.join(a.qemu_bin, "qemu-io")
        self.qemu_img = os.path.join(a.qemu_bin, "qemu-img")
        self.cli = a.cli
        self.work = a.work
        self.voldir = os.path.join(a.work, "vol")
        self.uri = "local://" + self.voldir
        self.quri = "hlfs:" + self.uri
        self.raw = os.path.join(a.work, "read.raw")
        self.nsec = a.size // SECTOR
        self.hot = min(self.nsec, (4 << 20) // SECTOR)
        # The exact contents after the last check: one byte per sector.
        self.state = bytearray(self.nsec)
        # Which durable write put each sector's value there (0: the initial
        # zeros, -1: an unflushed write that turned out to have landed).
        self.owner = [0] * self.nsec
        self.next_id = 1
        self.snaps = {}  # name -> per-sector contents (bytes)
        self.snap_seq = 0
        self.clone_seq = 0
        self.op_time = {}  # running estimate of each metadata op's duration
        self.st = dict(
            crash_points=0, io_points=0, op_points=0, open_kills=0,
            writes_acked=0, writes_durable=0, writes_checked=0,
            writes_unflushed=0, flushes=0, rw_runs_checked=0,
            sectors_checked=0, lost=0, bad_sectors=0, unopenable=0,
            op_happened=0, op_not=0, snapshots_checked=0, clones_checked=0,
            clone_leftovers=0,
        )

    # --- helpers -------------------------------------------------------------

    def read_volume(self, quri):
        """Per-sector values of quri read through a read-only open, or None
        if it does not open. A sector that is not uniform reads as -1."""
        if os.path.exists(self.raw):
            os.unlink(self.raw)
        p = subprocess.run([self.qemu_img, "convert", "-O", "raw", quri, self.raw],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            self.last_open_error = p.stdout.decode(errors="replace")
            return None
        with open(self.raw, "rb") as f:
            data = f.read()
        if len(data) != self.nsec * SECTOR:
            raise Failure(f"{quri} reads as {len(data)} bytes, expected {self.nsec * SECTOR}")
        vals = [0] * self.nsec
        mv = memoryview(data)
        for i in range(self.nsec):
            blk = mv[i * SECTOR:(i + 1) * SECTOR]
            v = blk[0]
            if v and bytes(blk).count(v) != SECTOR or not v and any(blk):
                v = -1
            vals[i] = v
        self.st["sectors_checked"] += self.nsec
        return vals

    def unopenable(self, what):
        self.st["unopenable"] += 1
        raise Failure(f"{what} does not open after the crash:\n{self.last_open_error}")

    @staticmethod
    def runs(vals):
        """(first sector, count, value) for each run of equal sectors."""
        out, start = [], 0
        for i in range(1, len(vals) + 1):
            if i == len(vals) or vals[i] != vals[start]:
                out.append((start, i - start, vals[start]))
                start = i
        return out

    def pick_range(self):
        r = self.rng.random()
        if r < 0.04:
            n = self.rng.randint(512, 4096)  # 256 KiB .. 2 MiB: several records
        elif r < 0.45:
            n = self.rng.randint(1, 8)
        elif r < 0.75:
            n = 8 * self.rng.randint(1, 4)
        else:
            n = self.rng.randint(1, 128)
        region = self.hot if self.rng.random() < 0.7 and n < self.hot else self.nsec
        n = min(n, region)
        s = self.rng.randint(0, region - n)
        if n % 8 == 0 and self.rng.random() < 0.5:
            s -= s % 8  # 4 KiB aligned
        return s, n

    def pick_pattern(self, cur, s, n):
        used = set(cur[s:s + n]) | set(self.state[s:s + n])
        while True:
            v = self.rng.randint(1, 255)
            if v not in used or len(used) >= 255:
                return v

    def alloc_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    # --- a qemu-io crash point ----------------------------------------------

    def io_point(self):
        rng = self.rng
        runs = self.runs(self.state)
        sample = runs if len(runs) <= RW_CHECK_RUNS else rng.sample(runs, RW_CHECK_RUNS)
        cmds, meta = [], []
        for s, n, v in sample:
            cmds.append(f"read -P {v} {s * SECTOR} {n * SECTOR}")
            meta.append(("check", s, n, v))
        nchecks = len(cmds)
        cur = bytearray(self.state)
        nops = rng.randint(3, 60)
        while len(cmds) - nchecks < nops:
            r = rng.random()
            if r < 0.15:
                cmds.append("flush")
                meta.append(("flush",))
            elif r < 0.22:
                # concurrent writes: sector-disjoint (they may share 4 KiB blocks)
                taken = []
                for _ in range(rng.randint(2, 6)):
                    s, n = self.pick_range()
                    if any(s < t + m and t < s + n for t, m in taken):
                        continue
                    taken.append((s, n))
                flush_at = len(cmds) + len(taken)
                for s, n in taken:
                    v = self.pick_pattern(cur, s, n)
                    cur[s:s + n] = bytes([v]) * n
                    cmds.append(f"aio_write -P {v} {s * SECTOR} {n * SECTOR}")
                    meta.append(("write", self.alloc_id(), s, n, v, flush_at))
                cmds.append("aio_flush")  # waits for them; not a disk flush
                meta.append(("aio_flush",))
            else:
                s, n = self.pick_range()
                k = rng.random()
                if k < 0.08:
                    v, c = 0, f"write -z {s * SECTOR} {n * SECTOR}"
                elif k < 0.14:
                    v, c = 0, f"discard {s * SECTOR} {n * SECTOR}"
                else:
                    v = self.pick_pattern(cur, s, n)
                    c = f"write -P {v} {s * SECTOR} {n * SECTOR}"
                cur[s:s + n] = bytes([v]) * n
                cmds.append(c)
                meta.append(("write", self.alloc_id(), s, n, v, None))

        open_kill = rng.random() < 0.08
        target = rng.randint(nchecks, len(cmds))
        delay = rng.choice([0.0, rng.uniform(0, 0.002), rng.uniform(0, 0.02)])
        open_delay = rng.uniform(0, 0.15)

        # "none": cache=none, the O_DIRECT writer with page-aligned batch records.
        p = subprocess.Popen([self.qemu_io, "-t", self.a.cache, self.quri], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        t0 = time.monotonic()
        if os.environ.get("CRASHLOOP_DEBUG"):
            log(f"target {target}{' (open kill)' if open_kill else ''}: " + "; ".join(cmds[nchecks:]))
        # qemu-io reads one line per wakeup of its event loop, so commands
        # go one at a time, each after the prompt that ends the previous one.
        fd = p.stdout.fileno()
        buf = bytearray()
        prompts = sent = 0
        exited = False
        while True:
            now = time.monotonic()
            if open_kill and now - t0 >= open_delay:
                break
            done = prompts - 1
            if done == sent:
                if not open_kill and done >= target:
                    if sent < len(cmds):
                        os.write(p.stdin.fileno(), cmds[sent].encode() + b"\n")
                        sent += 1
                    if delay:
                        time.sleep(delay)
                    break
                if sent < len(cmds):
                    os.write(p.stdin.fileno(), cmds[sent].encode() + b"\n")
                    sent += 1
            if now - t0 > 120:
                p.kill()
                p.wait()
                raise Failure(f"qemu-io made no progress in 120 s ({prompts} prompts):\n"
                              + buf[-3000:].decode(errors="replace"))
            r, _, _ = select.select([fd], [], [], 0.01)
            if r:
                d = os.read(fd, 1 << 16)
                if not d:
                    exited = True
                    break
                buf += d
                prompts = buf.count(PROMPT)
        p.send_signal(signal.SIGKILL)
        p.wait()  # reaped: the lock's pid is gone now
        # What it printed before dying still counts: those commands completed.
        while True:
            d = os.read(fd, 1 << 16)
            if not d:
                break
            buf += d
        p.stdout.close()
        p.stdin.close()
        self.st["crash_points"] += 1
        self.st["io_points"] += 1

        out = buf.decode(errors="replace")
        parts = out.split(PROMPT.decode())
        nprompts = len(parts) - 1
        if nprompts == 0:
            if "can't open" in out or "Could not open" in out:
                self.last_open_error = out
                self.unopenable("the volume (read-write open by qemu-io)")
            if exited:
                raise Failure(f"qemu-io exited before its first prompt:\n{out}")
            self.st["open_kills"] += 1
        if exited:
            raise Failure(f"qemu-io exited by itself:\n{out[-3000:]}")
        done = max(0, nprompts - 1)  # commands that returned
        # Command k's output is parts[k + 1] (aio completions may land later).
        bad_rw = []
        for k in range(done):
            o = parts[k + 1]
            if "verification failed" in o:
                bad_rw.append((meta[k], o.strip()))
            elif "failed" in o or "error" in o.lower():
                raise Failure(f"qemu-io command '{cmds[k]}' failed:\n{o}")
        self.st["rw_runs_checked"] += min(done, nchecks)
        if bad_rw:
            self.st["lost"] += len({self.owner[m[1]] for m, _ in bad_rw})
            raise Failure("the read-write open does not read what the read-only open read "
                          "after the previous crash:\n"
                          + "\n".join(f"  {m}: {o}" for m, o in bad_rw[:10]))

        last_flush = -1
        for k in range(done):
            if meta[k][0] == "flush":
                last_flush = k
                self.st["flushes"] += 1
        durable = bytearray(self.state)
        owner = list(self.owner)
        applied = set()
        maybe = {}
        for k in range(sent):  # the last one sent may be in flight
            m = meta[k]
            if m[0] != "write":
                continue
            _, wid, s, n, v, ack_at = m
            # An aio_write is acknowledged once the aio_flush after it returned.
            acked = (ack_at if ack_at is not None else k) < done
            if acked:
                self.st["writes_acked"] += 1
            if k < last_flush:
                durable[s:s + n] = bytes([v]) * n
                owner[s:s + n] = [wid] * n
                applied.add(wid)
                self.st["writes_durable"] += 1
            else:
                if acked:
                    self.st["writes_unflushed"] += 1
                for i in range(s, s + n):
                    maybe.setdefault(i, set()).add(v)
        self.check_head(durable, owner, maybe, "after SIGKILL of qemu-io")
        self.st["writes_checked"] += len(applied & set(self.owner))

    def check_head(self, durable, owner, maybe, when):
        """Reads the head read-only; each sector must hold its durable value or
        one of its `maybe` values. Makes what was read the new state."""
        vals = self.read_volume(self.quri)
        if vals is None:
            self.unopenable(f"the volume (read-only open, {when})")
        bad = []
        for i in range(self.nsec):
            v = vals[i]
            if v != durable[i] and v not in maybe.get(i, ()):
                bad.append(i)
        if bad:
            self.st["bad_sectors"] += len(bad)
            self.st["lost"] += len({owner[i] for i in bad})
            lines = [f"  sector {i} (offset {i * SECTOR}): reads "
                     f"{'mixed bytes' if vals[i] < 0 else hex(vals[i])}, durable "
                     f"{hex(durable[i])} (write #{owner[i]}), allowed also "
                     f"{sorted(maybe.get(i, ()))}" for i in bad[:10]]
            raise Failure(f"{len(bad)} sectors wrong {when}:\n" + "\n".join(lines))
        for i in range(self.nsec):
            if vals[i] != durable[i]:
                owner[i] = -1
        self.state = bytearray(vals)
        self.owner = owner

    # --- a metadata-operation crash point -------------------------------------

    def list_snaps(self):
        p = subprocess.run([self.cli, "snapshot", "list", "--output", "json", self.uri],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            self.last_open_error = p.stderr.decode(errors="replace")
            return None
        return [s["name"] for s in json.loads(p.stdout)]

    def killed(self, key, argv):
        """Runs argv and SIGKILLs it after a random delay (up to 1.5 times its
        usual duration). Returns its exit code if it finished first, else None."""
        est = self.op_time.get(key, 0.03)
        delay = self.rng.uniform(0, est * 1.5)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        finished = p.poll() is not None
        # Track the usual duration, so kills spread over the whole operation.
        if finished:
            self.op_time[key] = 0.8 * est + 0.2 * (time.monotonic() - t0)
        else:
            self.op_time[key] = max(est, delay) * 1.05
        p.send_signal(signal.SIGKILL)
        p.wait()
        out = p.stdout.read().decode(errors="replace")
        p.stdout.close()
        self.st["crash_points"] += 1
        self.st["op_points"] += 1
        if os.environ.get("CRASHLOOP_DEBUG"):
            log(f"{' '.join(argv)}: {'exit ' + str(p.returncode) if finished else 'killed'} "
                f"after {delay * 1000:.1f} ms")
        if finished and p.returncode != 0:
            raise Failure(f"'{' '.join(argv)}' exited {p.returncode}:\n{out}")
        return p.returncode if finished else None

    def op_point(self):
        rng = self.rng
        names = sorted(self.snaps)
        # gc: the segment cleaner, killed while it copies, checkpoints or retires.
        choices = ["gc"] * 3
        if len(names) < MAX_SNAPS:
            choices += ["create"] * 4
        if names:
            choices += ["revert"] * 3 + ["clone"] * 2 + ["delete"] * (4 if len(names) >= MAX_SNAPS else 1)
        op = rng.choice(choices)
        tool = rng.choice(["hlfs", "qemu-img"])
        head = bytes(self.state)
        target = rng.choice(names) if names else None
        if op == "create":
            self.snap_seq += 1
            target = f"c{self.snap_seq}"
            argv = ([self.cli, "snapshot", "create", self.uri, target] if tool == "hlfs"
                    else [self.qemu_img, "snapshot", "-c", target, self.quri])
        elif op == "revert":
            argv = ([self.cli, "snapshot", "revert", self.uri, target] if tool == "hlfs"
                    else [self.qemu_img, "snapshot", "-a", target, self.quri])
        elif op == "delete":
            argv = ([self.cli, "snapshot", "delete", self.uri, target] if tool == "hlfs"
                    else [self.qemu_img, "snapshot", "-d", target, self.quri])
        elif op == "gc":
            tool = "hlfs"
            argv = [self.cli, "gc", self.uri, "--max-utilization", "1", "--grace", "0"]
        else:
            self.clone_seq += 1
            dst = os.path.join(self.work, f"clone{self.clone_seq}")
            argv = ([self.cli, "clone", f"{self.uri}%{target}", "local://" + dst] if tool == "hlfs"
                    else [self.qemu_img, "create", "-b", f"{self.quri}%{target}", "hlfs:local://" + dst])
        rc = self.killed(f"{op}/{tool}", argv)
        what = f"after SIGKILL of {' '.join(argv[1:3])} ({op} {target}, {'finished' if rc is not None else 'killed'})"

        now = self.list_snaps()
        if now is None:
            self.unopenable(f"the volume (snapshot list, {what})")
        # Every snapshot we know survives, except the one being deleted.
        for n in self.snaps:
            if n not in now and not (op == "delete" and n == target):
                raise Failure(f"snapshot {n} is gone {what}; snapshots now: {now}")
        new = [n for n in now if n not in self.snaps]
        vals = self.read_volume(self.quri)
        if vals is None:
            self.unopenable(f"the volume (read-only open, {what})")
        if min(vals) < 0:
            self.st["lost"] += 1
            raise Failure(f"the head has torn sectors {what}")
        vals = bytes(vals)
        happened = False
        if op == "create":
            if new and new != [target]:
                raise Failure(f"unexpected new snapshots {new} {what}")
            if vals != head:
                self.lost_head(head, vals, what)
            happened = target in now
            if happened:
                self.snaps[target] = head
        elif op == "revert":
            want = self.snaps[target]
            # New snapshots can only be the replaced head (pre-revert-N).
            for n in new:
                if not n.startswith("pre-revert-"):
                    raise Failure(f"unexpected new snapshot {n} {what}")
                got = self.read_snap(n, what)
                if got != head:
                    self.st["lost"] += 1
                    raise Failure(f"{n} does not hold the replaced head {what}: {self.diff(head, got)}")
                self.snaps[n] = got
            if vals == want:
                happened = vals != head
                if happened and not any(c == head for c in self.snaps.values()):
                    self.st["lost"] += 1
                    raise Failure(f"the head replaced by the revert is in no snapshot {what}; "
                                  f"new snapshots: {new}")
            elif vals == head:
                if new:
                    raise Failure(f"head unchanged but new snapshots {new} appeared {what}")
            else:
                self.lost_head(head, vals, what, also=want)
        elif op == "gc":
            if new:
                raise Failure(f"unexpected new snapshots {new} {what}")
            if vals != head:
                self.lost_head(head, vals, what)
            happened = rc is not None
        elif op == "delete":
            if new:
                raise Failure(f"unexpected new snapshots {new} {what}")
            if vals != head:
                self.lost_head(head, vals, what)
            happened = target not in now
            if happened:
                del self.snaps[target]
        else:
            happened = self.check_clone(dst, self.snaps[target], what)
        self.st["op_happened" if happened else "op_not"] += 1
        # Every snapshot still reads as it did when it was taken.
        for n, want in self.snaps.items():
            got = self.read_snap(n, what)
            if got != want:
                self.st["lost"] += 1
                raise Failure(f"snapshot {n} changed {what}: {self.diff(want, got)}")
            self.st["snapshots_checked"] += 1
        self.state = bytearray(vals)
        self.owner = [0] * self.nsec

    def read_snap(self, name, what):
        v = self.read_volume(f"{self.quri}%{name}")
        if v is None:
            self.unopenable(f"snapshot {name} ({what})")
        if min(v) < 0:
            self.st["lost"] += 1
            raise Failure(f"snapshot {name} has torn sectors {what}")
        return bytes(v)

    def check_clone(self, dst, want, what):
        duri = "local://" + dst
        rc, out = run([self.cli, "info", duri], ok=None)
        if rc == 3:
            if os.path.exists(dst):
                # A directory without a volume: harmless, not a clone.
                self.st["clone_leftovers"] += 1
                shutil.rmtree(dst)
            return False
        if rc != 0:
            self.last_open_error = out
            self.unopenable(f"clone {duri} ({what})")
        v = self.read_volume("hlfs:" + duri)
        if v is None:
            self.unopenable(f"clone {duri} ({what})")
        if bytes(b & 0xff for b in v) != want or min(v) < 0:
            self.st["lost"] += 1
            raise Failure(f"clone {duri} does not read as its snapshot {what}: "
                          f"{self.diff(want, bytes(b & 0xff for b in v))}")
        self.st["clones_checked"] += 1
        run([self.cli, "delete", duri])
        return True

    @staticmethod
    def diff(want, got):
        d = [i for i in range(min(len(want), len(got))) if want[i] != got[i]]
        return (f"{len(d)} sectors differ, first at sector {d[0]}: "
                f"{hex(got[d[0]])} instead of {hex(want[d[0]])}") if d else "sizes differ"

    def lost_head(self, head, vals, what, also=None):
        self.st["lost"] += 1
        raise Failure(f"the head changed {what}: {self.diff(head, vals)}"
                      + (f"; the revert target differs too: {self.diff(also, vals)}" if also else ""))

    # --- the whole run ----------------------------------------------------------

    def tamper_check(self):
        """Writes one durable sector behind the ledger's back: the checker
        must report exactly that sector."""
        s = self.rng.randrange(self.nsec)
        v = (self.state[s] + 1) % 256 or 1
        run([self.qemu_io, "-c", f"write -P {v} {s * SECTOR} {SECTOR}", "-c", "flush", self.quri])
        lost = self.st["lost"]
        try:
            self.check_head(bytearray(self.state), list(self.owner), {}, "by the tamper check")
        except Failure as e:
            if self.st["lost"] != lost + 1 or f"sector {s} " not in str(e):
                raise Failure(f"the tamper check reported the wrong thing: {e}")
            self.st["lost"] = lost
            self.st["bad_sectors"] -= 1
            self.state[s] = v
            log(f"ok: the checker catches a sector changed behind its back (sector {s})")
            return
        raise Failure(f"the checker did not notice sector {s} changed from "
                      f"{hex(self.state[s])} to {hex(v)}")

    def counts(self):
        s = self.st
        return (f"crash points: {s['crash_points']}, writes checked: {s['writes_checked']}, "
                f"lost: {s['lost']}, unopenable: {s['unopenable']}")

    def details(self):
        return ", ".join(f"{k}={v}" for k, v in self.st.items())

    def main(self):
        a = self.a
        os.makedirs(a.work, exist_ok=True)
        run([self.qemu_img, "create", "-f", "hlfs", self.quri, str(a.size)])
        t0 = time.monotonic()
        log(f"seed {a.seed}, {a.points} crash points, volume {self.quri} ({a.size >> 20} MiB)")
        try:
            for i in range(a.points):
                if self.rng.random() < a.op_share or not self.snaps and i == 1:
                    self.op_point()
                else:
                    self.io_point()
                if (i + 1) % a.progress == 0:
                    log(f"{i + 1}/{a.points} in {time.monotonic() - t0:.0f} s: {self.counts()}")
            self.tamper_check()
            rc, out = run([self.cli, "fsck", self.uri], ok=None)
            if rc != 0:
                raise Failure(f"hlfs fsck {self.uri} exited {rc}:\n{out}")
            log("ok: hlfs fsck passes")
            # Private lock files of killed openers (lock.PID.N, lock.stale.*):
            # harmless, but nothing removes them.
            self.st["leftover_lock_files"] = sum(
                1 for f in os.listdir(self.voldir) if f.startswith("lock."))
        except Failure as e:
            log(f"FAIL (seed {a.seed}, at crash point {self.st['crash_points']}): {e}")
            print(self.counts(), flush=True)
            log(self.details())
            if a.keep_failed:
                dst = a.keep_failed
                shutil.copytree(self.voldir, dst, dirs_exist_ok=True)
                log(f"copied the volume to {dst}")
            return 1
        print(self.counts(), flush=True)
        log(f"{time.monotonic() - t0:.0f} s; {self.details()}")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu-bin", required=True, help="dir with the patched qemu-io and qemu-img")
    ap.add_argument("--cli", required=True, help="the hlfs binary")
    ap.add_argument("--work", required=True, help="scratch directory (the volume lives here)")
    ap.add_argument("--points", type=int, default=25, help="crash points (default 25)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--size", type=int, default=32 << 20, help="volume size in bytes")
    ap.add_argument("--op-share", type=float, default=0.25,
                    help="share of crash points that kill a snapshot/clone/revert command")
    ap.add_argument("--progress", type=int, default=50, help="log counts every N points")
    ap.add_argument("--cache", default="writeback", choices=["writeback", "none", "directsync", "writethrough"],
                    help="qemu-io's cache mode (-t) for the writing sessions (default writeback)")
    ap.add_argument("--keep-failed", metavar="DIR", help="copy the volume here on failure")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    if a.size % 4096 or a.size < (8 << 20):
        ap.error("--size must be a multiple of 4096 and at least 8 MiB")
    for t in ("qemu-io", "qemu-img"):
        if not os.access(os.path.join(a.qemu_bin, t), os.X_OK):
            ap.error(f"no {t} in --qemu-bin {a.qemu_bin}")
    if not os.access(a.cli, os.X_OK):
        ap.error(f"--cli {a.cli} is not an executable")
    a.work = os.path.abspath(a.work)
    sys.exit(Loop(a).main())


if __name__ == "__main__":
    main()
