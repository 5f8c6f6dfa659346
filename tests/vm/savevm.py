#!/usr/bin/env python3
"""savevm/loadvm on a guest whose disk is an hlfs volume.

The test guest (tests/guest/) boots from an hlfs volume (its disk imported
with `hlfs import`, attached with -blockdev driver=hlfs) and runs a counter
that lives only in its memory, printed on the console every 200 ms
(`count:200`). Then:

  1. HMP `savevm s1` with the VM stopped at count S; the VM goes on to
     S + 15; HMP `loadvm s1`: the counter goes on from S (the first count
     printed after the load is S or S + 1, or S - 1 where the guest's
     console had not sent its last line when the VM stopped);
  2. the same with the QMP jobs snapshot-save / snapshot-load, and
     snapshot-delete removes that snapshot;
  3. `info snapshots` shows s1 with a VM SIZE that is not 0;
  4. a new QEMU started with `-loadvm s1` goes on from S too;
  5. `hlfs snapshot list --output json` shows s1's vm_state_size; after
     `hlfs snapshot delete` the volume's live bytes drop by the VM state,
     and `hlfs gc --grace 0` gives the space back (allocated bytes).

Prints `savevm: ...` lines with the counts and sizes; exits 1 on a failure.
"""

import json
import os
import re
import sys
import time

from vmcommon import Failure, Qemu, QmpError, arg_parser, guest_args, hlfs, setup  # noqa: E402


def log(msg):
    print(f"[savevm] {msg}", file=sys.stderr, flush=True)


def counts(text):
    """The counter values of complete console lines, in order."""
    return [int(m) for m in re.findall(r"HLFS-GUEST: count=(\d+)\r?\n", text)]


class Vm(Qemu):
    def __init__(self, a, guest, name, uri, extra=()):
        self.log = os.path.join(a.work, f"{name}.log")
        if os.path.exists(self.log):
            os.unlink(self.log)
        self.start(a, name, ["-serial", f"file:{self.log}", *guest_args(guest, [uri], "count:200"),
                             *extra])

    def console(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_counts(self, pred, timeout, since=0, what="the counter"):
        deadline = time.monotonic() + timeout
        while True:
            c = counts(self.console()[since:])
            if pred(c):
                return c
            if self.p.poll() is not None:
                raise Failure(f"{self.name}: QEMU exited {self.p.returncode} waiting for {what}:\n"
                              f"{self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                raise Failure(f"{self.name}: {what} not seen within {timeout} s; counts {c[-10:]}; "
                              f"console tail:\n{self.console()[-1500:]}")
            time.sleep(0.1)

    def hmp(self, line):
        out = self.qmp.hmp(line)
        if out.strip():
            raise Failure(f"{self.name}: HMP '{line}' said: {out.strip()}")

    def job(self, cmd, job_id, **args):
        """Runs a snapshot job to its end; fails on its error."""
        self.qmp.cmd(cmd, job_id=job_id, **args)
        self.qmp.wait_event("JOB_STATUS_CHANGE", 600, {"id": job_id, "status": "concluded"})
        jobs = [j for j in self.qmp.cmd("query-jobs") if j["id"] == job_id]
        self.qmp.cmd("job-dismiss", id=job_id)
        if jobs and jobs[0].get("error"):
            raise Failure(f"{self.name}: {cmd} job failed: {jobs[0]['error']}")

    def stopped_count(self):
        """Stops the VM and returns the last count it printed."""
        self.qmp.cmd("stop")
        time.sleep(0.5)  # what the console still had to send
        return counts(self.console())[-1]

    def check_resumed(self, saved, since, how):
        """After a load: the counter goes on from SAVED."""
        c = self.wait_counts(lambda c: len(c) >= 5, 120, since, f"the counter after {how}")
        first = c[0]
        if not saved - 1 <= first <= saved + 1 or c[:5] != list(range(first, first + 5)):
            raise Failure(f"{self.name}: after {how} the counter printed {c[:8]}; it was {saved} "
                          f"when the state was saved")
        log(f"ok: after {how} the counter went on from {first} (saved at {saved})")


def main():
    ap = arg_parser(__doc__)
    a = ap.parse_args()
    guest = setup(a)
    uri = f"local://{a.work}/root"
    hlfs(a, "import", guest["disk"], uri)
    vm = None
    try:
        vm = Vm(a, guest, "run1", uri)
        vm.wait_counts(lambda c: c and c[-1] >= 5, 300, what="the guest's counter")

        # 1. HMP savevm / loadvm.
        s1 = vm.stopped_count()
        t0 = time.monotonic()
        vm.hmp("savevm s1")
        log(f"savevm s1 at count {s1} took {time.monotonic() - t0:.1f} s")
        vm.qmp.cmd("cont")
        m = vm.wait_counts(lambda c: c[-1] >= s1 + 15, 120, what=f"count {s1 + 15}")[-1]
        info = vm.qmp.hmp("info snapshots")
        row = [l for l in info.splitlines() if re.search(r"\bs1\b", l)]
        size = re.search(r"\bs1\s+(\S+(?: \S+)?)\s", row[0]) if row else None
        if not size or size.group(1).startswith("0 "):
            raise Failure(f"info snapshots shows no VM size for s1:\n{info}")
        log(f"ok: info snapshots: s1 with VM SIZE {size.group(1)}")
        vm.stopped_count()
        since = len(vm.console())
        vm.hmp("loadvm s1")
        vm.qmp.cmd("cont")
        vm.check_resumed(s1, since, f"HMP loadvm s1 (the counter had reached {m})")

        # 2. The QMP jobs.
        vm.wait_counts(lambda c: c[-1] >= s1 + 10, 120, what=f"count {s1 + 10}")
        s2 = vm.stopped_count()
        vm.job("snapshot-save", "save-s2", tag="s2", vmstate="d0", devices=["d0"])
        vm.qmp.cmd("cont")
        m = vm.wait_counts(lambda c: c[-1] >= s2 + 15, 120, what=f"count {s2 + 15}")[-1]
        vm.stopped_count()
        since = len(vm.console())
        vm.job("snapshot-load", "load-s2", tag="s2", vmstate="d0", devices=["d0"])
        vm.qmp.cmd("cont")
        vm.check_resumed(s2, since, f"the QMP snapshot-load job of s2 (the counter had reached {m})")
        vm.job("snapshot-delete", "delete-s2", tag="s2", devices=["d0"])
        if "s2" in vm.qmp.hmp("info snapshots"):
            raise Failure("s2 is still listed after the snapshot-delete job")
        log("ok: the snapshot-delete job removed s2")
        vm.quit()

        # 4. A new QEMU, -loadvm s1.
        vm = Vm(a, guest, "run2", uri, ["-loadvm", "s1"])
        vm.check_resumed(s1, 0, "a new QEMU with -loadvm s1")
        vm.quit()
        vm = None

        # 5. The snapshot list, and the space back once s1 is deleted.
        snaps = json.loads(hlfs(a, "snapshot", "list", "--output", "json", uri))
        s = [x for x in snaps if x["name"] == "s1"]
        # Each load kept the state it left as pre-revert-N (as every HLFS
        # revert does); s2 was deleted by its job.
        if not s or s[0]["vm_state_size"] <= 0 or any(x["name"] == "s2" for x in snaps):
            raise Failure(f"hlfs snapshot list: {snaps}")
        vm_size = s[0]["vm_state_size"]
        before = json.loads(hlfs(a, "info", "--output", "json", uri))
        hlfs(a, "snapshot", "delete", uri, "s1")
        mid = json.loads(hlfs(a, "info", "--output", "json", uri))
        gc = hlfs(a, "gc", "--grace", "0", uri)
        after = json.loads(hlfs(a, "info", "--output", "json", uri))
        freed_live = before["live_bytes"] - mid["live_bytes"]
        freed = before["allocated_bytes"] - after["allocated_bytes"]
        log(f"s1's VM state {vm_size} bytes; deleting s1: live bytes -{freed_live}; "
            f"hlfs gc --grace 0: allocated {before['allocated_bytes']} -> {after['allocated_bytes']} "
            f"(-{freed}); gc said: {gc.strip().splitlines()[-1] if gc.strip() else ''}")
        if freed_live < vm_size - 4096:
            raise Failure(f"deleting s1 freed {freed_live} live bytes, less than its VM state ({vm_size})")
        if freed < vm_size // 2:
            raise Failure(f"hlfs gc gave back {freed} bytes, less than half of s1's VM state ({vm_size})")
        hlfs(a, "fsck", uri)
        print(f"savevm: VM state {vm_size} bytes, counter resumed after loadvm, the QMP jobs and "
              f"-loadvm; {freed} bytes reclaimed after delete", flush=True)
    except (Failure, QmpError) as e:
        log(f"FAIL: {e}")
        if vm:
            vm.p.kill()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
