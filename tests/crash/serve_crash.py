#!/usr/bin/python3
"""`hlfs serve` killed with SIGKILL loses no acknowledged write.

Each crash point starts `hlfs serve URI --nbd unix:SOCK --daemonize`, writes
through NBD with libnbd (4 KiB to 64 KiB at random block-aligned offsets,
some with FUA, a flush every few writes), kills the daemon with SIGKILL
after a random number of writes, starts it again and checks every block
ever written: it must hold its last acknowledged version (flushed, or
written with FUA) or a version written after that one. A block never
acknowledged may hold any of its versions or what was there before.

Runs with Debian's python3 and its python3-libnbd. Usage:
  serve_crash.py --hlfs HLFS --uri local:///DIR/vol --work DIR [--points N] [--seed S]
The volume must exist. Prints one line per point and a summary; exit 0 if
nothing acknowledged was lost.
"""

import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time

import nbd

BS = 4096


def block(seq, b):
    """4 KiB that name version `seq` of block `b`."""
    head = struct.pack("<QQ", seq, b)
    rng = random.Random(seq * 1_000_003 + b)
    return head + rng.randbytes(BS - len(head))


def version_of(data, b):
    seq, blk = struct.unpack("<QQ", data[:16])
    if blk != b or data != block(seq, b):
        return None
    return seq


class Server:
    def __init__(self, a):
        self.a = a
        self.sock = os.path.join(a.work, "nbd.sock")
        self.pidf = os.path.join(a.work, "serve.pid")

    def start(self):
        if os.path.exists(self.pidf):
            os.unlink(self.pidf)
        r = subprocess.run([self.a.hlfs, "serve", self.a.uri, "--nbd", "unix:" + self.sock, "--name", "v",
                            "--daemonize", "--pid-file", self.pidf], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"serve_crash: hlfs serve failed ({r.returncode}): {r.stderr}")
        self.pid = int(open(self.pidf).read())

    def connect(self):
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///v?socket={self.sock}")
        return h

    def stop(self, sig):
        """Sends `sig` and waits until the daemon (not our child: it
        daemonized) is gone and its socket refuses connections."""
        os.kill(self.pid, sig)
        for _ in range(1000):
            if not alive(self.pid) and not listening(self.sock):
                return
            time.sleep(0.01)
        sys.exit(f"serve_crash: the daemon (pid {self.pid}) did not exit after signal {sig}")


def alive(pid):
    """Whether process `pid` still runs: a zombie leader counts as alive
    while other threads of its group have not exited."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        threads = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("Threads:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return False
    return state != "Z" or threads > 1


def listening(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hlfs", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--blocks", type=int, default=4096, help="blocks of the volume to use (default 4096: 16 MiB)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"[serve-crash] seed {seed}, {a.points} crash points on {a.uri}", flush=True)
    srv = Server(a)
    # Per block: last acknowledged version, and versions written after it.
    acked = {}
    pending = {}
    seq = 0
    lost = checked_total = writes_total = 0
    for point in range(a.points):
        srv.start()
        h = srv.connect()
        kill_after = rng.randrange(1, 120)
        unflushed = set()
        for i in range(kill_after):
            n = rng.choice([1, 1, 2, 4, 16])
            b0 = rng.randrange(0, a.blocks - n)
            seq += 1
            buf = b"".join(block(seq, b) for b in range(b0, b0 + n))
            fua = rng.random() < 0.15
            h.pwrite(buf, b0 * BS, nbd.CMD_FLAG_FUA if fua else 0)
            writes_total += 1
            for b in range(b0, b0 + n):
                if fua:
                    acked[b] = seq
                    pending[b] = []
                    unflushed.discard(b)
                else:
                    pending.setdefault(b, []).append(seq)
                    unflushed.add(b)
            if rng.random() < 0.2:
                h.flush()
                for b in unflushed:
                    acked[b] = pending[b][-1]
                    pending[b] = []
                unflushed.clear()
        srv.stop(signal.SIGKILL)
        try:
            h.shutdown()
        except nbd.Error:
            pass
        del h
        srv.start()
        h = srv.connect()
        checked = 0
        for b in sorted(set(acked) | set(pending)):
            got = version_of(h.pread(BS, b * BS), b)
            ok_versions = set(pending.get(b, []))
            if b in acked:
                ok_versions.add(acked[b])
            elif got is None:
                continue  # never acknowledged: old contents are fine
            if got not in ok_versions:
                lost += 1
                print(f"[serve-crash] LOST: block {b} holds version {got}, acknowledged {acked.get(b)}, "
                      f"later {pending.get(b)}", flush=True)
            # What is there now is the block's durable state.
            if got is not None:
                acked[b] = got
            pending[b] = []
            checked += 1
        checked_total += checked
        h.shutdown()
        srv.stop(signal.SIGTERM)
        print(f"[serve-crash] point {point + 1}/{a.points}: killed after {kill_after} writes, "
              f"{checked} blocks checked, lost so far {lost}", flush=True)
    print(f"[serve-crash] {a.points} crash points, {writes_total} writes, {checked_total} block checks, "
          f"lost {lost} (seed {seed})", flush=True)
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
