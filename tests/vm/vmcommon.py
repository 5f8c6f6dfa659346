"""What the running-VM tests (savevm.py, migrate.py) share: the import
paths, the failure type, the hlfs CLI, and a QEMU process with QMP."""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "crash"))
from qmpclient import Qmp, QmpError  # noqa: E402,F401
from guest_fio_crash import guest_build  # noqa: E402,F401


class Failure(Exception):
    """A check failed."""


def hlfs(a, *args, ok=(0,)):
    """Runs the hlfs CLI (a.cli); returns its output, fails on other exit codes."""
    p = subprocess.run([a.cli, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode(errors="replace")
    if p.returncode not in ok:
        raise Failure(f"hlfs {' '.join(args)} exited {p.returncode}:\n{out}")
    return out


class Qemu:
    """A qemu-system-x86_64 of the test guest, with a QMP socket; its
    stderr goes to NAME.err in the work directory."""

    def start(self, a, name, args):
        self.name = name
        self.err = os.path.join(a.work, f"{name}.err")
        sock = os.path.join(a.work, f"{name}.qmp")
        if os.path.exists(sock):
            os.unlink(sock)
        argv = [os.path.join(a.qemu_bin, "qemu-system-x86_64"), "-m", "256", *a.accel_args,
                "-display", "none", "-nic", "none", "-no-reboot", "-monitor", "none",
                "-qmp", f"unix:{sock},server=on,wait=off", *args]
        self.errf = open(self.err, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf)
        try:
            self.qmp = Qmp(sock)
        except QmpError as e:
            raise Failure(f"{name}: {e}: {self.stderr()}")

    def stderr(self):
        with open(self.err, "rb") as f:
            return f.read().decode(errors="replace")

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def quit(self):
        try:
            self.qmp.cmd("quit")
        except (QmpError, OSError):
            pass  # gone already (the guest powered off)
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.errf.close()


def guest_args(guest, uris, cmd):
    """The test guest booted by direct kernel boot with the hlfs volumes
    URIS as virtio disks (node names d0, d1, ...; the first is its root)
    and the fw_cfg command CMD."""
    args = []
    for i, u in enumerate(uris):
        args += ["-blockdev", json.dumps({"driver": "hlfs", "uri": u, "node-name": f"d{i}"}),
                 "-device", f"virtio-blk-pci,drive=d{i}"]
    return args + ["-kernel", guest["kernel"], "-initrd", guest["initrd"], "-append", guest["cmdline"],
                   "-fw_cfg", "name=opt/hlfs/cmd,string=" + cmd.replace(",", ",,")]


def arg_parser(doc):
    """The options every running-VM test takes."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--qemu-bin", required=True, help="dir with the patched qemu-system-x86_64 and qemu-io")
    ap.add_argument("--cli", required=True, help="the hlfs binary")
    ap.add_argument("--build-guest", required=True, help="tests/guest/build-guest.sh")
    ap.add_argument("--work", required=True, help="scratch directory (the volumes live here)")
    ap.add_argument("--accel", default="tcg", choices=["kvm", "tcg"])
    return ap


def setup(a):
    """Accelerator flags and the work directory; builds (or finds) the guest."""
    a.accel_args = ["-accel", "kvm", "-cpu", "host"] if a.accel == "kvm" else ["-accel", "tcg"]
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    return guest_build(a)
