#!/usr/bin/env python3
"""One QMP command to a running QEMU: qmp.py SOCKET COMMAND [ARGUMENTS-JSON].

Connects to the QMP socket (-qmp unix:SOCKET,server=on,wait=off), leaves
capabilities negotiation, runs COMMAND and prints its "return" value as
JSON. Exits 1 with QEMU's error (class and description) if the command
fails, 2 if QEMU cannot be reached.
"""

import json
import socket
import sys


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n")[0])
    path, cmd = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) == 4 else None
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(path)
    except OSError as e:
        print(f"qmp.py: cannot connect to {path}: {e}", file=sys.stderr)
        sys.exit(2)
    f = s.makefile("rwb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                print("qmp.py: QEMU closed the connection", file=sys.stderr)
                sys.exit(2)
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def send(execute, arguments=None):
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        return reply()

    reply()  # the greeting
    send("qmp_capabilities")
    r = send(cmd, args)
    if "error" in r:
        print(f"qmp.py: {cmd}: {r['error'].get('class')}: {r['error'].get('desc')}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(r.get("return")))


if __name__ == "__main__":
    main()
