"""What the crash loops (crashloop.py, guest_fio_crash.py) share."""

import subprocess


class Failure(Exception):
    """A check failed: something was lost, did not open, or errored."""


def run(argv, ok=(0,)):
    """Runs argv, returns (exit code, stdout+stderr). Raises Failure if the
    exit code is not in ok (None: any code is fine)."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode(errors="replace")
    if ok is not None and p.returncode not in ok:
        raise Failure(f"'{' '.join(argv)}' exited {p.returncode}:\n{out}")
    return p.returncode, out
