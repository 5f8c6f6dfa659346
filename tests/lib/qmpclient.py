"""A QMP client for the tests: commands, and the events QEMU sends."""

import json
import queue
import socket
import threading
import time


class QmpError(Exception):
    """QEMU answered a command with an error, closed the connection, or
    its socket did not come up."""


class Qmp:
    """A QMP connection; events are collected as they come."""

    def __init__(self, path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QmpError(f"QMP socket {path} did not come up")
                time.sleep(0.1)
        self.f = self.sock.makefile("rwb")
        self.replies = queue.Queue()
        self.events = []
        self.lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()
        self.replies.get(timeout=30)  # the greeting
        self.cmd("qmp_capabilities")

    def _reader(self):
        try:
            for line in self.f:
                msg = json.loads(line)
                if "event" in msg:
                    with self.lock:
                        self.events.append(msg)
                else:
                    self.replies.put(msg)
        except (OSError, ValueError):
            pass
        self.replies.put(None)

    def cmd(self, name, timeout=600, **args):
        """Runs NAME with ARGS (underscores in keys become dashes) and
        returns its "return" value."""
        req = {"execute": name}
        if args:
            req["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        self.f.write(json.dumps(req).encode() + b"\n")
        self.f.flush()
        r = self.replies.get(timeout=timeout)
        if r is None:
            raise QmpError(f"QEMU closed QMP during {name}")
        if "error" in r:
            raise QmpError(f"QMP {name}: {r['error'].get('class')}: {r['error'].get('desc')}")
        return r["return"]

    def hmp(self, line, timeout=600):
        """An HMP command through QMP; returns its output."""
        return self.cmd("human-monitor-command", timeout=timeout, command_line=line)

    def event_names(self):
        with self.lock:
            return [e["event"] for e in self.events]

    def wait_event(self, name, timeout, match=None):
        """Waits for (and removes) the first event NAME whose data contains
        MATCH's items."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for i, e in enumerate(self.events):
                    d = e.get("data", {})
                    if e["event"] == name and all(d.get(k) == v for k, v in (match or {}).items()):
                        return self.events.pop(i)
            if time.monotonic() > deadline:
                raise QmpError(f"no {name} event {match or ''} within {timeout} s "
                               f"(events: {self.event_names()})")
            time.sleep(0.05)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
