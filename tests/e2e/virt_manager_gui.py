#!/usr/bin/python3
"""Drives the patched virt-manager (virt-manager-patch/) through its real
window with dogtail (AT-SPI), as a person would, and checks every result
through virsh and the hlfs CLI. Run by tests/e2e/virt_manager_gui.sh, which
starts the private libvirtd, Xvfb and the D-Bus session (with the AT-SPI
bus) and sets the environment below; not meant to be run by hand.

Environment (all required):
  VMM_BIN        the patched bin/virt-manager
  VIRSH          virsh of the patched libvirt
  LV_URI         the private libvirtd's URI
  HLFS_CLI       the hlfs CLI
  POOL_DIR       directory for the local hlfs pool (holds the volume 'guest':
                 the test guest, counting "HLFS-GUEST: count=N" on ttyS0)
  DOM            name for the new VM
  VIRT_TYPE      'kvm' or 'qemu': the domain type the VM must get. virt-manager
                 offers no accelerator choice for x86_64 and takes KVM when
                 libvirt has it; where KVM cannot run the test guest (a PVM
                 /dev/kvm) the driver turns on XML editing in Preferences and
                 sets <domain type='qemu'> in the customize step
  WORK           work directory (virt-manager's log, failure screenshots)
  SHOTS          directory for the documentation screenshots ('' = none)
  HDFS_DIR       an hdfs:// directory URI for an HDFS pool ('' = skip that step)

Every step prints "ok   ..." when its check passed; the first failure
prints what the window showed, saves WORK/fail.png and exits 1.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

os.environ.setdefault("GTK_MODULES", "gail:atk-bridge")
from dogtail import config  # noqa: E402
config.searchBackoffDuration = 0.5
config.searchCutoffCount = 20          # ~10 s per lookup
config.defaultDelay = 0.3
config.actionDelay = 0.3
config.logDebugToFile = False
config.logDebugToStdOut = False
from dogtail import tree  # noqa: E402

ENV = {k: os.environ[k] for k in ("VMM_BIN", "VIRSH", "LV_URI", "HLFS_CLI", "POOL_DIR",
                                  "DOM", "VIRT_TYPE", "WORK", "SHOTS", "HDFS_DIR")}
POOL = "hp1"
HPOOL = "hh1"
APP = None
T0 = time.time()


def say(msg):
    print("ok   %s  [%.0fs]" % (msg, time.time() - T0), flush=True)


def dump(node, depth=0, out=None):
    out = [] if out is None else out
    try:
        if depth and not node.showing:
            return out
        out.append("  " * depth + "%s | %s%s" % (node.roleName, node.name,
                                                 "" if node.sensitive else " (insensitive)"))
        for c in node.children:
            dump(c, depth + 1, out)
    except Exception as e:  # the tree changes under us
        out.append("  " * depth + "?? %s" % e)
    return out


def screenshot(path, node=None):
    args = ["import", "-window", "root"]
    if node is not None:
        (x, y), (w, h) = node.position, node.size
        args += ["-crop", "%dx%d+%d+%d" % (w, h, max(x, 0), max(y, 0)), "+repage"]
    # 8-bit palette PNG: the UI has few colours, and the files stay small
    args += ["-colors", "128", "-depth", "8", "-strip", path]
    subprocess.run(args, check=False)


def fail(msg):
    print("FAIL: %s" % msg, flush=True)
    try:
        for f in APP.children:
            print("--- window '%s':" % f.name)
            print("\n".join(dump(f)[:150]))
    except Exception as e:
        print("(no window tree: %s)" % e)
    screenshot(os.path.join(ENV["WORK"], "fail.png"))
    print("screenshot: %s" % os.path.join(ENV["WORK"], "fail.png"), flush=True)
    sys.exit(1)


def virsh(*args, ok=True):
    r = subprocess.run([ENV["VIRSH"], "-q", "-c", ENV["LV_URI"]] + list(args),
                       capture_output=True, text=True)
    if ok and r.returncode != 0:
        fail("virsh %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def hlfs(*args):
    r = subprocess.run([ENV["HLFS_CLI"]] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail("hlfs %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def wait_for(desc, fn, timeout=30, every=0.5):
    deadline = time.time() + timeout
    while True:
        try:
            v = fn()
        except Exception:  # a node went away while looking
            v = None
        if v:
            return v
        if time.time() > deadline:
            fail("timed out (%d s) waiting for %s" % (timeout, desc))
        time.sleep(every)


# ---- widget helpers ----------------------------------------------------------
def showing(parent, role, name=None, pred=None):
    """The first showing descendant with this role (and name / predicate)."""
    def match(n):
        return (n.roleName == role and n.showing and
                (name is None or n.name == name) and (pred is None or pred(n)))
    return wait_for("%s '%s' in '%s'" % (role, name or "", parent.name),
                    lambda: parent.findChild(match, retry=False, requireResult=False))


def window(title, timeout=30):
    return wait_for("window '%s'" % title,
                    lambda: next((f for f in APP.children
                                  if f.name == title and f.showing), None), timeout)


def window_gone(title, timeout=60):
    wait_for("window '%s' to close" % title,
             lambda: not any(f.name == title and f.showing for f in APP.children), timeout)


def press(parent, name, role="push button", raw=False):
    """Clicks a button: by its AT-SPI action, or (raw) with the mouse at its
    place. A button whose handler runs a modal dialog or a long job must be
    clicked raw: the action call returns only when the handler does."""
    b = showing(parent, role, name)
    wait_for("'%s' to become sensitive" % name, lambda: b.sensitive, 20)
    if raw:
        b.click()
    else:
        b.doActionNamed("click")
    return b


def labelled(parent, label):
    """The widget a showing label names (mnemonic labels: 'Na_me:' -> 'Name:')."""
    lab = showing(parent, "label", label)
    w = lab.labelee
    if w is None:
        fail("label '%s' names no widget" % label)
    return w


def select_cell(table, name):
    cell = wait_for("row '%s' in '%s'" % (name, table.name),
                    lambda: table.findChild(lambda n: n.roleName == "table cell" and n.name == name,
                                            retry=False, requireResult=False), 30)
    cell.click()
    time.sleep(0.5)
    return cell


def choose_combo(combo, item):
    combo.click()
    mi = wait_for("menu item '%s'" % item,
                  lambda: combo.findChild(lambda n: n.roleName == "menu item" and n.name == item,
                                          retry=False, requireResult=False), 10)
    mi.click()
    time.sleep(0.5)


def top_alert():
    """A dialog of virt-manager (a top-level 'alert'), or None. Looks at the
    top-level windows only: searching the whole tree while virt-manager
    works starves its main loop (libvirt's replies come through it)."""
    return next((a for a in APP.children if a.roleName == "alert" and a.showing), None)


def alert_yes():
    a = wait_for("a confirmation dialog", top_alert, 20)
    text = " ".join(n.name for n in a.findChildren(lambda n: n.roleName == "label"))
    press(a, "Yes")
    return text


def no_error_dialog(step):
    """virt-manager reports failures in an error alert: fail with its text."""
    a = top_alert()
    if a is not None:
        text = " | ".join(n.name for n in a.findChildren(lambda n: n.roleName == "label") if n.name)
        fail("%s: virt-manager shows an error: %s" % (step, text))


# ---- virsh views -----------------------------------------------------------------
def vols(pool):
    return [line.split()[0] for line in virsh("vol-list", pool).splitlines() if line.strip()]


def pool_xml(pool):
    return virsh("pool-dumpxml", pool)


# ---- the steps ---------------------------------------------------------------------
def start_app():
    global APP
    log = open(os.path.join(ENV["WORK"], "virt-manager.log"), "w")
    proc = subprocess.Popen([ENV["VMM_BIN"], "--no-fork", "--debug",
                             "--connect", ENV["LV_URI"]],
                            stdout=log, stderr=subprocess.STDOUT)
    APP = wait_for("virt-manager on the AT-SPI bus",
                   lambda: tree.root.application("virt-manager")
                   if any(a.name == "virt-manager" for a in tree.root.children) else None, 60)
    main = window("Virtual Machine Manager", 60)
    # connected: the connection row shows 'QEMU/KVM' without '- Not Connected'
    wait_for("the connection to libvirtd",
             lambda: main.findChild(lambda n: n.roleName == "table cell" and n.name == "QEMU/KVM",
                                    retry=False, requireResult=False), 60)
    say("virt-manager %s is up, connected to %s" % (ENV["VMM_BIN"], ENV["LV_URI"]))
    return proc


def enable_xml_editing():
    main = window("Virtual Machine Manager")
    showing(main, "menu", "Edit")
    APP.child("Preferences", "menu item").doActionNamed("click")
    p = window("Preferences")
    cb = showing(p, "check box", "Enable XML editing")
    if not cb.checked:
        cb.click()
    wait_for("XML editing on", lambda: cb.checked, 10)
    press(p, "Close")
    window_gone("Preferences")


def open_storage_tab():
    main = window("Virtual Machine Manager")
    showing(main, "menu", "Edit")
    APP.child("Connection Details", "menu item").doActionNamed("click")
    det = window("QEMU/KVM - Connection Details")
    showing(det, "page tab", "Storage").click()
    showing(det, "table", "pool-list")
    return det


def close_details(det):
    det.child("File", "menu").child("Close", "menu item").doActionNamed("click")
    window_gone("QEMU/KVM - Connection Details")


def add_pool(det, name, source, shot=None):
    press(det, "pool-add")
    d = window("Add a New Storage Pool")
    labelled(d, "Name:").text = name
    combo = showing(d, "combo box", pred=lambda n: n.name in ("dir", "fs", "netfs"))
    choose_combo(combo, "hlfs: HLFS (local directory or HDFS)")
    src = wait_for("the pool's source field",
                   lambda: d.findChild(lambda n: n.roleName == "text" and n.showing and
                                       n.name == "pool-source-name-text",
                                       retry=False, requireResult=False), 10)
    src.text = source
    time.sleep(0.5)
    if shot:
        screenshot(shot, d)
    press(d, "Finish", raw=True)
    wait_for("the pool dialog to close or an error",
             lambda: not d.showing or top_alert(), 90)
    no_error_dialog("add pool %s" % name)


def step_pool_local(det):
    src = ENV["POOL_DIR"]
    add_pool(det, POOL, src, shot=os.path.join(ENV["SHOTS"], "virt-manager-add-pool.png")
             if ENV["SHOTS"] else None)
    x = pool_xml(POOL)
    if "<pool type='hlfs'>" not in x or ("<name>local://%s</name>" % src) not in x:
        fail("pool %s is not an hlfs pool on local://%s:\n%s" % (POOL, src, x))
    info = virsh("pool-info", POOL)
    if not re.search(r"State:\s+running", info):
        fail("pool %s is not running:\n%s" % (POOL, info))
    if "guest" not in vols(POOL):
        fail("pool %s does not list the volume 'guest': %s" % (POOL, vols(POOL)))
    say("Add Storage Pool: hlfs pool %s on %s (plain path -> local://%s), running, lists 'guest'"
        % (POOL, src, src))


def step_pool_hdfs(det):
    uri = ENV["HDFS_DIR"]
    if not uri:
        print("skip HDFS pool: no HLFS_TEST_HDFS (scripts/test.sh starts a cluster)", flush=True)
        return
    add_pool(det, HPOOL, uri)
    x = pool_xml(HPOOL)
    if ("<name>%s</name>" % uri) not in x:
        fail("pool %s does not have source %s:\n%s" % (HPOOL, uri, x))
    # virt-manager learns that the new pool runs on its next poll: select it
    # (again) until its volume buttons are enabled
    pools = showing(det, "table", "pool-list")
    newvol = showing(det, "push button", "vol-new")
    deadline = time.time() + 40
    while True:
        select_cell(pools, "%s\nHLFS (local directory or HDFS)" % HPOOL)
        time.sleep(1)
        if newvol.sensitive:
            break
        if time.time() > deadline:
            fail("the volume buttons of pool %s stay disabled" % HPOOL)
        select_cell(pools, "%s\nHLFS (local directory or HDFS)" % POOL)
        time.sleep(2)
    create_volume(det, HPOOL, "hd1", 1)
    hlfs("info", uri + "/hd1")
    say("Add Storage Pool on HDFS: %s (%s), volume hd1 created in it (hlfs info reads it)"
        % (HPOOL, uri))


def create_volume(det, pool, name, gib):
    press(det, "vol-new")
    d = window("Add a Storage Volume")
    t = showing(d, "text", pred=lambda n: n.sensitive and n.name == "")
    t.text = name
    showing(d, "spin button").value = gib
    time.sleep(0.3)
    press(d, "Finish", raw=True)
    wait_for("volume %s in virsh vol-list %s" % (name, pool), lambda: name in vols(pool), 60)
    window_gone("Add a Storage Volume")
    no_error_dialog("create volume %s" % name)
    info = virsh("vol-info", "--pool", pool, name, "--bytes")
    m = re.search(r"Capacity:\s+(\d+)", info)
    if not m or int(m.group(1)) != gib << 30:
        fail("volume %s: capacity is not %d GiB:\n%s" % (name, gib, info))


def step_volumes(det):
    pools = showing(det, "table", "pool-list")
    select_cell(pools, "%s\nHLFS (local directory or HDFS)" % POOL)
    create_volume(det, POOL, "data1", 1)
    hlfs("info", "local://%s/data1" % ENV["POOL_DIR"])
    say("New volume: data1 (1 GiB) in %s; virsh vol-info and hlfs info agree" % POOL)

    vl = showing(det, "table", "vol-list")
    select_cell(vl, "data1")
    press(det, "vol-clone")
    wait_for("volume data1-clone in virsh vol-list", lambda: "data1-clone" in vols(POOL), 60)
    no_error_dialog("clone data1")
    info = json.loads(hlfs("info", "--output", "json", "local://%s/data1-clone" % ENV["POOL_DIR"]))
    base = json.dumps(info)
    if "data1%libvirt-clone-" not in base:
        fail("data1-clone is not an HLFS clone of a snapshot of data1: %s" % base)
    say("Clone volume: data1-clone, an HLFS clone of data1%libvirt-clone-... (hlfs info)")

    wait_for("row data1-clone", lambda: vl.findChild(
        lambda n: n.roleName == "table cell" and n.name == "data1-clone",
        retry=False, requireResult=False), 30)
    if ENV["SHOTS"]:
        screenshot(os.path.join(ENV["SHOTS"], "virt-manager-volumes.png"), det)
    select_cell(vl, "data1-clone")
    press(det, "vol-delete", raw=True)
    text = alert_yes()
    wait_for("data1-clone to leave virsh vol-list", lambda: "data1-clone" not in vols(POOL), 60)
    no_error_dialog("delete data1-clone")
    if os.path.exists(os.path.join(ENV["POOL_DIR"], "data1-clone")):
        fail("vol-delete left the directory of data1-clone")
    say("Delete volume: data1-clone gone from virsh vol-list and the pool directory (asked: %s)"
        % text.strip()[:60])


def step_new_vm():
    main = window("Virtual Machine Manager")
    press(main, "New")
    w = window("New VM")
    showing(w, "radio button", "Import existing disk image").click()
    press(w, "Forward")
    # storage: the existing volume 'guest' of the hlfs pool, through the browser
    press(w, "install-import-browse")
    b = window("vmm-storage-browser")
    select_cell(showing(b, "table", "pool-list"), "%s\nHLFS (local directory or HDFS)" % POOL)
    select_cell(showing(b, "table", "vol-list"), "guest")
    press(b, "Choose Volume")
    window_gone("vmm-storage-browser")
    path = showing(w, "text", "import-entry").text
    if path != "hlfs:local://%s/guest" % ENV["POOL_DIR"]:
        fail("the storage browser chose '%s', not the hlfs volume guest" % path)
    os_entry = showing(w, "text", "oslist-entry")
    os_entry.text = "generic"
    pop = wait_for("the OS list", lambda: APP.findChild(
        lambda n: n.name == "oslist-popover" and n.showing, retry=False, requireResult=False), 20)
    cell = wait_for("a 'Generic' OS", lambda: pop.findChild(
        lambda n: n.roleName == "table cell" and n.name.startswith("Generic") and n.showing,
        retry=False, requireResult=False), 20)
    cell.click()
    time.sleep(0.5)
    press(w, "Forward")
    showing(w, "label", "Choose Memory and CPU settings:")
    showing(w, "spin button", "").value = 256        # memory (MiB), the unnamed one
    showing(w, "spin button", "cpus").value = 1
    press(w, "Forward")
    name = labelled(w, "Name:")
    name.text = ENV["DOM"]
    # The private libvirtd has no virtual networks (and a system connection
    # offers no usermode networking): customize, remove the NIC, install.
    showing(w, "check box", "Customize configuration before install").click()
    press(w, "Finish", raw=True)
    cw = window("%s on QEMU/KVM" % ENV["DOM"], 60)
    hw = showing(cw, "table", pred=lambda n: n.findChild(
        lambda c: c.roleName == "table cell" and c.name.startswith("NIC"),
        retry=False, requireResult=False) is not None)
    nic = hw.findChild(lambda c: c.roleName == "table cell" and c.name.startswith("NIC"),
                       retry=False)
    nic.click()
    time.sleep(0.5)
    press(cw, "config-remove", raw=True)
    alert_yes()
    wait_for("the NIC to leave the hardware list", lambda: hw.findChild(
        lambda c: c.roleName == "table cell" and c.name.startswith("NIC"),
        retry=False, requireResult=False) is None, 20)
    if ENV["VIRT_TYPE"] == "qemu":
        select_cell(hw, "Overview")
        showing(cw, "page tab", "XML").click()
        xml = wait_for("the XML editor", lambda: cw.findChild(
            lambda n: n.roleName == "text" and n.showing and "<domain" in (n.text or ""),
            retry=False, requireResult=False), 20)
        old = xml.text
        new = re.sub(r'<domain type="kvm"', '<domain type="qemu"', old, count=1)
        # and TCG's default CPU instead of the host's (KVM only)
        new = re.sub(r'\s*<cpu mode="host-passthrough"[^>]*?(/>|>.*?</cpu>)', '', new,
                     count=1, flags=re.S)
        if new == old and '<domain type="qemu"' not in old:
            fail("the XML editor shows no <domain type=\"kvm\">: %s" % old[:200])
        xml.text = new
        time.sleep(0.5)
        press(cw, "config-apply", raw=True)
        time.sleep(1)
        no_error_dialog("XML edit")
    press(cw, "Begin Installation", raw=True)

    def running():
        no_error_dialog("new VM")
        return virsh("domstate", ENV["DOM"], ok=False).strip() == "running"
    wait_for("domain %s to run" % ENV["DOM"], running, 120)
    x = virsh("dumpxml", ENV["DOM"])
    if "<domain type='%s'" % ENV["VIRT_TYPE"] not in x:
        fail("%s is not a '%s' domain:\n%s" % (ENV["DOM"], ENV["VIRT_TYPE"], x[:300]))
    if not re.search(r"<source protocol='hlfs' name='local://%s/guest'" % re.escape(ENV["POOL_DIR"]), x):
        fail("%s's disk is not the hlfs volume guest:\n%s" % (ENV["DOM"], x))
    say("New VM: %s defined and running, its disk <source protocol='hlfs' name='local://%s/guest'/>"
        % (ENV["DOM"], ENV["POOL_DIR"]))


def main():
    for k in ("SHOTS",):
        if ENV[k]:
            os.makedirs(ENV[k], exist_ok=True)
    proc = start_app()
    try:
        if ENV["VIRT_TYPE"] == "qemu":
            enable_xml_editing()
        det = open_storage_tab()
        step_pool_local(det)
        step_pool_hdfs(det)
        step_volumes(det)
        close_details(det)
        step_new_vm()
        step_snapshots()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    say("all steps passed")


# ---- snapshots --------------------------------------------------------------------
class Console:
    """Reads the guest's serial console (a pty) in the background."""

    def __init__(self):
        self.buf = ""
        self.lock = threading.Lock()
        self.fd = None

    def attach(self):
        pty = wait_for("the serial pty of %s" % ENV["DOM"],
                       lambda: virsh("ttyconsole", ENV["DOM"], ok=False).strip(), 30)
        self.fd = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
        mark = len(self.buf)
        threading.Thread(target=self._read, args=(self.fd,), daemon=True).start()
        return mark

    def _read(self, fd):
        while True:
            try:
                d = os.read(fd, 4096)
            except OSError:
                return
            if not d:
                return
            with self.lock:
                self.buf += d.decode("utf-8", "replace")

    def counts(self, mark=0):
        with self.lock:
            text = self.buf[mark:]
        return [int(c) for c in re.findall(r"HLFS-GUEST: count=(\d+)\r?\n", text)]

    def text(self, mark=0):
        with self.lock:
            return self.buf[mark:]


def step_snapshots():
    con = Console()
    con.attach()
    wait_for("the guest's counter (boot from the hlfs volume)",
             lambda: len(con.counts()) >= 3, 240)
    say("the guest booted from the hlfs volume and counts on ttyS0 (count=%d)" % con.counts()[-1])

    # after the install virt-manager shows the VM's window (the console)
    title = "%s on QEMU/KVM" % ENV["DOM"]
    vw = wait_for("the VM window with its Snapshots button", lambda: next(
        (f for f in APP.children if f.name == title and f.showing and f.findChild(
            lambda n: n.roleName == "radio button" and n.name == "Snapshots",
            retry=False, requireResult=False)), None), 30)
    showing(vw, "radio button", "Snapshots").click()
    add = showing(vw, "push button", "snapshot-add")
    wait_for("snapshot-add to be sensitive (snapshots of an HLFS disk allowed)",
             lambda: add.sensitive, 20)
    c0 = con.counts()[-1]
    add.doActionNamed("click")
    d = window("Create snapshot")
    name = labelled(d, "Name:")
    name.text = "s1"
    press(d, "Finish", raw=True)
    wait_for("snapshot s1 in virsh snapshot-list",
             lambda: "s1" in virsh("snapshot-list", ENV["DOM"], "--name").split(), 120)
    window_gone("Create snapshot")
    no_error_dialog("create snapshot")
    c1 = con.counts()[-1]
    info = virsh("snapshot-info", ENV["DOM"], "s1")
    if not re.search(r"State:\s+running", info) or not re.search(r"Location:\s+internal", info):
        fail("s1 is not an internal snapshot of the running domain:\n%s" % info)
    snaps = json.loads(hlfs("snapshot", "list", "--output", "json",
                            "local://%s/guest" % ENV["POOL_DIR"]))
    s1 = [s for s in snaps if s["name"] == "s1"]
    if not s1 or not s1[0].get("vm_state_size"):
        fail("HLFS snapshot s1 of guest has no VM state: %s" % snaps)
    say("Create snapshot: s1 of the running VM (counts %d..%d): internal, state running; "
        "HLFS snapshot s1 holds %d bytes of memory state" % (c0, c1, s1[0]["vm_state_size"]))
    if ENV["SHOTS"]:
        time.sleep(1)
        screenshot(os.path.join(ENV["SHOTS"], "virt-manager-snapshots.png"), vw)

    # revert: the guest goes on from the saved counter, without booting again
    wait_for("the counter to move on", lambda: con.counts()[-1] >= c1 + 15, 60)
    before = con.counts()[-1]
    row = wait_for("row s1", lambda: vw.findChild(
        lambda n: n.roleName == "table cell" and n.name.startswith("s1") and n.showing,
        retry=False, requireResult=False), 20)
    row.click()
    domid = virsh("domid", ENV["DOM"]).strip()
    press(vw, "snapshot-start", raw=True)
    alert_yes()
    # the revert starts a new QEMU (a new domain id, a new pty)
    wait_for("%s to run again under a new QEMU" % ENV["DOM"],
             lambda: virsh("domid", ENV["DOM"], ok=False).strip() not in ("", "-", domid) and
             virsh("domstate", ENV["DOM"], ok=False).strip() == "running", 120)
    mark = con.attach()
    wait_for("counts after the revert", lambda: len(con.counts(mark)) >= 2, 60)
    no_error_dialog("revert")
    first = con.counts(mark)[0]
    if "HLFS-GUEST: boot" in con.text(mark):
        fail("the guest booted again after the revert (no memory state restored)")
    if not (c0 - 1 <= first < before - 5):
        fail("first count after the revert is %d; s1 was taken at %d..%d, the guest was at %d"
             % (first, c0, c1, before))
    say("Run (revert to) snapshot s1: running again under a new QEMU, the counter went back "
        "from %d to %d (s1 taken while it showed %d..%d; the console is read again from just "
        "after the revert), no new boot" % (before, first, c0, c1))

    row = wait_for("row s1", lambda: vw.findChild(
        lambda n: n.roleName == "table cell" and n.name.startswith("s1") and n.showing,
        retry=False, requireResult=False), 20)
    row.click()
    press(vw, "snapshot-delete", raw=True)
    alert_yes()
    wait_for("s1 to leave virsh snapshot-list",
             lambda: "s1" not in virsh("snapshot-list", ENV["DOM"], "--name").split(), 60)
    no_error_dialog("delete snapshot")
    snaps = json.loads(hlfs("snapshot", "list", "--output", "json",
                            "local://%s/guest" % ENV["POOL_DIR"]))
    if any(s["name"] == "s1" for s in snaps):
        fail("HLFS snapshot s1 is still there after Delete: %s" % snaps)
    if virsh("domstate", ENV["DOM"]).strip() != "running":
        fail("%s is not running after the snapshot delete" % ENV["DOM"])
    say("Delete snapshot: s1 gone from virsh snapshot-list and hlfs snapshot list; still running")


if __name__ == "__main__":
    main()
