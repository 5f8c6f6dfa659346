#!/usr/bin/env python3
"""Runs the measurements of the HLFS benchmark report (issue 7) and writes
them as JSON (argv[1]); bench/render.py turns that into docs/benchmarks.md
and docs/charts/*.png. Started by bench/report.sh, which builds everything
and passes the paths in the environment:

  QEMU_BIN      dir with the patched qemu-img / qemu-system-x86_64
  HLFS_CLI      the hlfs binary
  HLFS_ROOT     the checkout
  GUEST_DISK    the test guest's disk.raw (tests/guest/build-guest.sh; a template, copied)
  BENCH_WORK    scratch dir (images go here)
  HLFS_BENCH_QUICK=1   small sizes, 3 repetitions
  BENCH_ONLY    comma-separated subset of sections (imgbench,fio,snap,import,boot)
  BENCH_FIO_REPS   repetitions of the fio section (default: as the others)

Every measurement is repeated; the report gives the median and the range
(min-max), and ratios hlfs/raw and hlfs/qcow2 of medians from the same run.
Within each repetition the formats run back to back, so they see the same
machine conditions. It is a benchmark, not a test: it fails only if a tool
fails, never on a number.
"""
import datetime
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.environ["HLFS_ROOT"]
QBIN = os.environ["QEMU_BIN"]
QIMG = os.path.join(QBIN, "qemu-img")
QSYS = os.path.join(QBIN, "qemu-system-x86_64")
HLFS = os.environ["HLFS_CLI"]
WORK = os.environ["BENCH_WORK"]
QUICK = os.environ.get("HLFS_BENCH_QUICK", "") not in ("", "0")
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
FORMATS = ["raw", "qcow2", "hlfs"]
RUN_GUEST = os.path.join(ROOT, "tests/guest/run-guest.sh")

if QUICK:
    CFG = dict(reps=3, img_mib=256, n4k=16384, fio_mib=256, fio_runtime=3,
               levels=[0, 1024, 16384, 65536], import_mib=256)
else:
    CFG = dict(reps=5, img_mib=1024, n4k=65536, fio_mib=1024, fio_runtime=10,
               levels=[0, 1024, 16384, 262144, 1048576], import_mib=1024)
STEP_BLOCKS = 65521  # prime, so odd: a permutation of any power-of-two block count


def log(msg):
    print(f"[report] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def run(cmd, what=None, **kw):
    """Runs cmd (argv list); returns stdout; fails the report with the output."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"[report] FAIL: {what or cmd[0]}: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}")
    return p.stdout


def timed(cmd, what=None):
    t0 = time.monotonic()
    run(cmd, what)
    return time.monotonic() - t0


def sync_and_prewarm(mib):
    # Same start for every timed run: (1) write back what earlier runs left
    # dirty, or the kernel throttles this run for them; (2) on a VM that
    # hands freed memory back to the host (free page reporting) the first
    # touch of a page is slow, so write and delete some page cache first
    # (see bench/notes.md, "Machine"). Neither is timed.
    os.sync()
    path = os.path.join(WORK, "prewarm")
    run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "status=none"])
    os.unlink(path)


def stats(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), runs=xs)


def img(fmt, name):
    return {"raw": f"{WORK}/{name}.raw", "qcow2": f"{WORK}/{name}.qcow2",
            "hlfs": f"hlfs:local://{WORK}/{name}"}[fmt]


def fargs(fmt):
    return [] if fmt == "hlfs" else ["-f", fmt]


def remove(fmt, name):
    if fmt == "hlfs":
        shutil.rmtree(f"{WORK}/{name}", ignore_errors=True)
    else:
        try:
            os.unlink(img(fmt, name))
        except FileNotFoundError:
            pass


def create(fmt, name, size):
    remove(fmt, name)
    run([QIMG, "create", "-q", *fargs(fmt), img(fmt, name), size], f"qemu-img create {fmt}")


def fill(fmt, name, mib, pattern="0x3c"):
    """Writes the first MIB MiB of an image with 1 MiB writes."""
    if mib > 0:
        run([QIMG, "bench", *fargs(fmt), "-w", "-t", "writeback", "-d", "32", "-s", "1M", "-S", "1M",
             "-c", str(mib), f"--pattern={pattern}", img(fmt, name)], f"fill {fmt}")


def drive(fmt, name, extra=""):
    if fmt == "hlfs":
        return f"file={img(fmt, name)},if=virtio{extra}"
    return f"file={img(fmt, name)},if=virtio,format={fmt}{extra}"


# ---------------------------------------------------------------------------
# qemu-img bench
# ---------------------------------------------------------------------------
def image_files(fmt, name):
    """The image's files: for hlfs all of the volume's."""
    if fmt != "hlfs":
        return [img(fmt, name)]
    return [os.path.join(d, f) for d, _, fs in os.walk(f"{WORK}/{name}") for f in fs]


def drop_cache(fmt, name):
    # Evicts the image's pages from the page cache before a -t none run, so
    # it starts from the disk whatever buffered run came before. This is
    # posix_fadvise(DONTNEED) per file (what `dd iflag=nocache count=0`
    # does), which drops only that file's clean pages (the caller has just
    # synced), rather than /proc/sys/vm/drop_caches, which would empty the
    # page cache of the whole machine.
    for path in image_files(fmt, name):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(fmt, name):
    """Reads the whole image into the page cache (the cached-read rows)."""
    for path in image_files(fmt, name):
        with open(path, "rb", buffering=0) as fh:
            while fh.read(1 << 20):
                pass


def cached_bytes(fmt, name):
    """Bytes of the image in the page cache (fincore); for hlfs the sum over
    the volume's segment files, where its data lives."""
    if fmt == "hlfs":
        paths = sorted(glob.glob(f"{WORK}/{name}/seg-*"))
    else:
        paths = [img(fmt, name)]
    out = run(["fincore", "--bytes", "--noheadings", "--output", "RES", *paths], "fincore")
    return sum(int(x) for x in out.split())


# A -t none row counts only if hlfs bypassed the page cache as raw and qcow2
# do (O_DIRECT): more than this share of the bytes it moved left in the
# cache after a run means the row measured the page cache, not the disk.
PAGE_CACHE_LIMIT = 0.05


def section_imgbench():
    mib, n4k, reps = CFG["img_mib"], CFG["n4k"], CFG["reps"]
    blocks = mib * 256
    step = STEP_BLOCKS * 4096
    rnd = ["-s", "4k", "-S", str(step)]
    seq = ["-s", "1M", "-S", "1M"]
    fl = "--flush-interval=64"
    # (key, label, cache, image, unit, ops per run, goals, args). The cache
    # mode (qemu-img bench -t) is the same for all three formats: under
    # -t none raw and qcow2 use O_DIRECT, and the hlfs driver gets the same
    # flag as any driver. image: "fresh" (created empty, removed after),
    # "overwrite" (created and filled, not timed, before every run, removed
    # after: every round overwrites the same state), "filled" (filled once,
    # only read). goals: the minimum hlfs/raw and hlfs/qcow2.
    work = [
        ("randwrite_qd32_none_ow", "4K random overwrite, QD32, -t none", "none", "overwrite", "IOPS", n4k,
         dict(raw=1.5, qcow2=2.0), ["-w", *rnd, "-d", "32"]),
        ("randwrite_qd32_none_ow_flush", "4K random overwrite, QD32, flush every 64, -t none", "none", "overwrite",
         "IOPS", n4k, dict(raw=1.5, qcow2=2.0), ["-w", *rnd, "-d", "32", fl]),
        ("randwrite_qd32", "4K random write, QD32, -t writeback", "writeback", "fresh", "IOPS", n4k,
         dict(raw=1.0, qcow2=1.3), ["-w", *rnd, "-d", "32"]),
        ("seqwrite_1m_none", "1M sequential write, QD32, -t none", "none", "fresh", "MiB/s", mib,
         dict(raw=0.9), ["-w", *seq, "-d", "32"]),
        ("seqread_1m_none", "1M sequential read, QD32, -t none", "none", "filled", "MiB/s", mib,
         dict(raw=0.9), [*seq, "-d", "32"]),
        ("randread_qd32_none", "4K random read, QD32, -t none", "none", "filled", "IOPS", n4k,
         dict(raw=0.9), [*rnd, "-d", "32"]),
        # Earlier rows (buffered; reads of images held in the page cache).
        ("randread_qd1", "4K random read, QD1, -t writeback", "writeback", "filled", "IOPS", n4k, {},
         [*rnd, "-d", "1"]),
        ("randread_qd32", "4K random read, QD32, -t writeback", "writeback", "filled", "IOPS", n4k, {},
         [*rnd, "-d", "32"]),
        ("randwrite_qd1", "4K random write, QD1, -t writeback", "writeback", "fresh", "IOPS", n4k, {},
         ["-w", *rnd, "-d", "1"]),
        ("randwrite_qd32_flush", "4K random write, QD32, flush every 64, -t writeback", "writeback", "fresh",
         "IOPS", n4k, {}, ["-w", *rnd, "-d", "32", fl]),
        ("seqread_1m", "1M sequential read, QD32, -t writeback", "writeback", "filled", "MiB/s", mib, {},
         [*seq, "-d", "32"]),
        ("seqwrite_1m", "1M sequential write, QD32, -t writeback", "writeback", "fresh", "MiB/s", mib, {},
         ["-w", *seq, "-d", "32"]),
    ]
    log(f"qemu-img bench: {mib} MiB images, {n4k} 4K requests, {reps} rounds")
    for f in FORMATS:
        create(f, "filled", f"{mib}M")
        fill(f, "filled", mib)
    times = {(k, f): [] for k, *_ in work for f in FORMATS}
    cached = {(k, f): [] for k, *_ in work for f in FORMATS}
    for r in range(reps):
        for key, label, cache, image, unit, n, goals, args in work:
            for f in FORMATS:
                name = "filled" if image == "filled" else "w"
                if image != "filled":
                    create(f, name, f"{mib}M")
                if image == "overwrite":
                    fill(f, name, mib)
                extra = ["-c", str(n)]
                if image == "filled" and "4k" in args:
                    extra += ["-o", str(((r + 1) * 7919 % blocks) * 4096)]  # another start per round
                if "-w" in args:
                    extra.append("--pattern=0xa5")
                os.sync()
                if cache == "none":
                    drop_cache(f, name)
                elif image == "filled":
                    warm_cache(f, name)  # a cached read, whatever -t none row dropped the pages before
                sync_and_prewarm(min(mib, 512))
                out = run([QIMG, "bench", *fargs(f), "-t", cache, *args, *extra, img(f, name)],
                          f"qemu-img bench {f} {key}")
                m = re.search(r"Run completed in ([0-9.]+) seconds", out)
                if not m:
                    sys.exit(f"[report] FAIL: no 'Run completed' from qemu-img bench:\n{out}")
                times[key, f].append(float(m.group(1)))
                if cache == "none":
                    cached[key, f].append(cached_bytes(f, name))
                if image != "filled":
                    remove(f, name)
        log(f"qemu-img bench round {r + 1}/{reps} done (load {os.getloadavg()[0]:.1f})")
    for f in FORMATS:
        remove(f, "filled")
    res = []
    for key, label, cache, image, unit, n, goals, args in work:
        row = dict(key=key, label=label, unit=unit, cache=cache, image=image, goals=goals)
        for f in FORMATS:
            row[f] = stats([n / t for t in times[key, f]])
        if cache == "none":
            moved = n * (4096 if unit == "IOPS" else 1 << 20)
            row["page_cache"] = dict(moved_bytes=moved, write="-w" in args,
                                     **{f: stats(cached[key, f]) for f in FORMATS})
            row["page_cache"]["hlfs_bypassed"] = max(cached[key, "hlfs"]) <= PAGE_CACHE_LIMIT * moved
        res.append(row)
    return dict(image_mib=mib, requests_4k=n4k, reps=reps, rows=res, page_cache_limit=PAGE_CACHE_LIMIT)


# ---------------------------------------------------------------------------
# guest runs (fio, boot, memory)
# ---------------------------------------------------------------------------
def guest_run(tag, boot_drive, data_drive=None, cmd=None, kernel=True, timeout=300, retry=True):
    """Boots the test guest through tests/guest/run-guest.sh. Returns
    (seconds to the 'HLFS-GUEST: boot' line, seconds to exit, peak RSS MiB of
    the QEMU process tree, console text)."""
    logf = f"{WORK}/{tag}.log"
    argv = [RUN_GUEST, "-q", QSYS, "-D", boot_drive, "-l", logf, "-t", str(timeout)]
    if kernel:
        argv.append("-k")
    if cmd:
        argv += ["-c", cmd.replace(",", ",,")]  # QEMU's option syntax doubles commas
    if data_drive:
        argv += ["--", "-drive", data_drive]
    errf = open(f"{WORK}/{tag}.err", "w")
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf)
    t_boot = None
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if t_boot is None:
            try:
                with open(logf, "rb") as fh:
                    if b"HLFS-GUEST: boot" in fh.read():
                        t_boot = time.monotonic() - t0
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    t_exit = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.close()
    text = open(logf, "rb").read().decode("utf-8", "replace").replace("\r", "")
    if (p.returncode != 0 or t_boot is None) and retry:
        # A TCG guest very rarely stalls (seen once: fio hung in one raw run);
        # one retry keeps a long run going, and the log says so.
        log(f"guest run {tag} exited {p.returncode}; retrying once (console: {logf}.failed)")
        os.replace(logf, logf + ".failed")
        return guest_run(tag, boot_drive, data_drive, cmd, kernel, timeout, retry=False)
    if p.returncode != 0 or t_boot is None:
        sys.exit(f"[report] FAIL: guest run {tag} exited {p.returncode}:\n"
                 f"{open(f'{WORK}/{tag}.err').read()[-2000:]}\n--- console ---\n{text[-3000:]}")
    # ru_maxrss of a waited child covers its waited-for descendants: the
    # largest of run-guest.sh, timeout and QEMU is QEMU.
    return t_boot, t_exit, ru.ru_maxrss / 1024.0, text


def fio_jobs():
    rt = CFG["fio_runtime"]
    common = f"ioengine=libaio,direct=1,time_based=1,runtime={rt},randrepeat=0,norandommap=1"
    return [
        ("randread_qd1", "4K random read, QD1", "read", "IOPS", f"name=randread_qd1,rw=randread,bs=4k,iodepth=1,{common}"),
        ("randread_qd32", "4K random read, QD32", "read", "IOPS", f"name=randread_qd32,rw=randread,bs=4k,iodepth=32,{common}"),
        ("randwrite_qd1", "4K random write, QD1", "write", "IOPS", f"name=randwrite_qd1,rw=randwrite,bs=4k,iodepth=1,{common}"),
        ("randwrite_qd32", "4K random write, QD32", "write", "IOPS", f"name=randwrite_qd32,rw=randwrite,bs=4k,iodepth=32,{common}"),
        ("seqread_1m", "1M sequential read, QD8", "read", "MiB/s", f"name=seqread_1m,rw=read,bs=1M,iodepth=8,{common}"),
        ("seqwrite_1m", "1M sequential write, QD8", "write", "MiB/s", f"name=seqwrite_1m,rw=write,bs=1M,iodepth=8,{common}"),
    ]


def parse_fio(text):
    out = {}
    for m in re.finditer(r"HLFS-GUEST: fio-begin=(\S+)\n(.*?)\n[^\n]*HLFS-GUEST: fio-end=\1", text, re.S):
        out[m.group(1)] = json.loads(m.group(2))
    return out


def section_fio():
    mib, reps = CFG["fio_mib"], int(os.environ.get("BENCH_FIO_REPS") or CFG["reps"])
    jobs = fio_jobs()
    cmd = ";".join(f"fio:{spec}" for *_, spec in jobs)
    log(f"fio in the guest: {mib} MiB data disk, {len(jobs)} jobs x {CFG['fio_runtime']} s, {reps} rounds")
    boot = f"{WORK}/fio-boot.raw"
    run(["cp", "--sparse=always", os.environ["GUEST_DISK"], boot])
    for f in FORMATS:
        create(f, "fiodata", f"{mib}M")
        fill(f, "fiodata", mib)
    vals = {(k, f): [] for k, *_ in jobs for f in FORMATS}
    rss = {f: [] for f in FORMATS}
    wall = {f: [] for f in FORMATS}
    timeout = 60 + len(jobs) * (CFG["fio_runtime"] * 2 + 10)
    for r in range(reps):
        for f in FORMATS:
            sync_and_prewarm(256)
            _, t_exit, maxrss, text = guest_run(f"fio-{f}-{r}", f"file={boot},if=virtio,format=raw",
                                                drive(f, "fiodata"), cmd, kernel=True, timeout=timeout)
            res = parse_fio(text)
            for key, label, side, unit, spec in jobs:
                if key not in res:
                    sys.exit(f"[report] FAIL: no fio result for {key} ({f}):\n{text[-3000:]}")
                j = res[key]["jobs"][0][side]
                vals[key, f].append(j["iops"] if unit == "IOPS" else j["bw"] / 1024.0)
            rss[f].append(maxrss)
            wall[f].append(t_exit)
            log(f"fio {f} round {r + 1}/{reps}: {t_exit:.1f} s, QEMU peak RSS {maxrss:.0f} MiB")
    for f in FORMATS:
        remove(f, "fiodata")
    os.unlink(boot)
    rows = []
    for key, label, side, unit, spec in jobs:
        row = dict(key=key, label=label, unit=unit)
        for f in FORMATS:
            row[f] = stats(vals[key, f])
        rows.append(row)
    return dict(data_mib=mib, runtime=CFG["fio_runtime"], reps=reps, rows=rows,
                specs=[spec for *_, spec in jobs],
                rss={f: stats(rss[f]) for f in FORMATS}, wall={f: stats(wall[f]) for f in FORMATS})


def section_boot():
    reps = CFG["reps"]
    disk = os.environ["GUEST_DISK"]
    log(f"boot time: the guest disk as raw, qcow2 and hlfs, {reps} rounds (SeaBIOS -> SYSLINUX -> kernel)")
    run(["cp", "--sparse=always", disk, f"{WORK}/bootdisk.raw"])
    remove("qcow2", "bootdisk")
    run([QIMG, "convert", "-f", "raw", "-O", "qcow2", disk, img("qcow2", "bootdisk")])
    remove("hlfs", "bootdisk")
    run([QIMG, "convert", "-f", "raw", disk, img("hlfs", "bootdisk")])
    tb = {f: [] for f in FORMATS}
    te = {f: [] for f in FORMATS}
    rss = {f: [] for f in FORMATS}
    up = {f: [] for f in FORMATS}
    for r in range(reps):
        for f in FORMATS:
            sync_and_prewarm(256)
            t_boot, t_exit, maxrss, text = guest_run(f"boot-{f}-{r}", drive(f, "bootdisk"), kernel=False)
            m = re.search(r"HLFS-GUEST: uptime=([0-9.]+)", text)
            tb[f].append(t_boot)
            te[f].append(t_exit)
            rss[f].append(maxrss)
            up[f].append(float(m.group(1)) if m else float("nan"))
        log(f"boot round {r + 1}/{reps}: " + ", ".join(f"{f} {tb[f][-1]:.1f} s" for f in FORMATS))
    for f in FORMATS:
        remove(f, "bootdisk")
    return dict(reps=reps, boot={f: stats(tb[f]) for f in FORMATS}, exit={f: stats(te[f]) for f in FORMATS},
                rss={f: stats(rss[f]) for f in FORMATS}, uptime={f: stats(up[f]) for f in FORMATS})


# ---------------------------------------------------------------------------
# snapshot / clone create vs mapped blocks
# ---------------------------------------------------------------------------
def section_snap():
    reps = 2 * CFG["reps"] + 1  # cheap, and a single fdatasync is bimodal on this kind of VM
    levels = CFG["levels"]
    log(f"snapshot/clone create vs mapped blocks {levels}, {reps} each")
    out = []
    for blocks in levels:
        mib = blocks // 256
        size = f"{max(8192, 2 * mib)}M"
        create("hlfs", "snap", size)
        create("qcow2", "snap", size)
        t0 = time.monotonic()
        fill("hlfs", "snap", mib)
        t_fill_h = time.monotonic() - t0
        fill("qcow2", "snap", mib)
        info = json.loads(run([HLFS, "info", f"local://{WORK}/snap", "--output", "json"]))
        uri = f"local://{WORK}/snap"
        ts, tc, tqq, tqh, tqo = [], [], [], [], []
        for i in range(reps):
            os.sync()
            ts.append(timed([HLFS, "snapshot", "create", uri, f"s{i}"], "hlfs snapshot create"))
            tc.append(timed([HLFS, "clone", f"{uri}%s{i}", f"local://{WORK}/snapclone{i}"], "hlfs clone"))
            tqq.append(timed([QIMG, "snapshot", "-c", f"q{i}", img("qcow2", "snap")], "qemu-img snapshot qcow2"))
            tqh.append(timed([QIMG, "snapshot", "-c", f"q{i}", img("hlfs", "snap")], "qemu-img snapshot hlfs"))
            tqo.append(timed([QIMG, "create", "-q", "-f", "qcow2", "-b", img("qcow2", "snap"), "-F", "qcow2",
                              f"{WORK}/snapoverlay{i}.qcow2"], "qemu-img create -b (qcow2 overlay)"))
        for i in range(reps):
            shutil.rmtree(f"{WORK}/snapclone{i}", ignore_errors=True)
            os.unlink(f"{WORK}/snapoverlay{i}.qcow2")
        remove("hlfs", "snap")
        remove("qcow2", "snap")
        out.append(dict(blocks=blocks, fill_s=t_fill_h, info=info, hlfs_snapshot=stats(ts), hlfs_clone=stats(tc),
                        qemu_img_snapshot_qcow2=stats(tqq), qemu_img_snapshot_hlfs=stats(tqh),
                        qcow2_overlay=stats(tqo)))
        log(f"  {blocks} blocks: hlfs snapshot {statistics.median(ts) * 1e3:.1f} ms, clone "
            f"{statistics.median(tc) * 1e3:.1f} ms, qcow2 snapshot {statistics.median(tqq) * 1e3:.1f} ms")
    return dict(reps=reps, rows=out)


# ---------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------
def section_import():
    reps, mib = CFG["reps"], CFG["import_mib"]
    src = f"{WORK}/import-src.raw"
    log(f"import: {mib} MiB raw image, every other MiB random data, {reps} rounds")
    with open(src, "wb") as fh:
        fh.truncate(mib << 20)
        for i in range(0, mib, 2):
            fh.seek(i << 20)
            fh.write(os.urandom(1 << 20))
    # qemu-img convert's default cache mode for the target is "unsafe": it
    # never flushes, and the copy would end in the page cache. -t writeback
    # makes every convert end with a flush, as `hlfs import` does, so that
    # all four leave the image durable.
    ways = [
        ("qemu-img convert -O qcow2", "qcow2",
         lambda: [QIMG, "convert", "-t", "writeback", "-f", "raw", "-O", "qcow2", src, img("qcow2", "imp")]),
        ("qemu-img convert -O raw", "raw",
         lambda: [QIMG, "convert", "-t", "writeback", "-f", "raw", "-O", "raw", src, img("raw", "imp")]),
        ("hlfs import", "hlfs", lambda: [HLFS, "import", src, f"local://{WORK}/imp"]),
        ("qemu-img convert to hlfs:", "hlfs",
         lambda: [QIMG, "convert", "-t", "writeback", "-f", "raw", src, img("hlfs", "imp")]),
    ]
    t = {w[0]: [] for w in ways}
    for r in range(reps):
        for name, fmt, argv in ways:
            remove(fmt, "imp")
            sync_and_prewarm(256)
            t[name].append(timed(argv(), name))
        remove("hlfs", "imp")
        remove("raw", "imp")
        remove("qcow2", "imp")
        log(f"import round {r + 1}/{reps}: " + ", ".join(f"{n} {t[n][-1]:.2f} s" for n, *_ in ways))
    os.unlink(src)
    return dict(reps=reps, mib=mib, data_mib=(mib + 1) // 2, rows=[dict(way=n, **stats(t[n])) for n, *_ in ways])


# ---------------------------------------------------------------------------
def machine():
    def sh(*cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    flags = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and not cpu:
            cpu = line.split(":", 1)[1].strip()
    mem = ""
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    virt = sh("systemd-detect-virt") or "unknown"
    accel = sh("bash", "-c", f". {ROOT}/tests/lib/qemu.sh; guest_accel")
    kvm = ("/dev/kvm is kvm_pvm (runs only PVM guest kernels)" if os.path.isdir("/sys/module/kvm_pvm")
           else ("/dev/kvm present" if os.path.exists("/dev/kvm") else "no /dev/kvm"))
    fs = sh("findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", WORK)
    dev = fs.split()[0] if fs else ""
    model = ""
    if dev.startswith("/dev/"):
        size, rota = (sh("lsblk", "-dno", "SIZE,ROTA", dev).split() + ["", ""])[:2]
        model = f"{size}, lsblk ROTA={rota}"
    fs = " ".join(fs.split())
    return dict(
        cpu=cpu, cores=os.cpu_count(), ram=mem, kernel=platform.release(), os=sh("sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"),
        virt=virt, accel=accel, kvm=kvm, workdir=WORK, fs=fs, disk=model,
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        qemu=sh(QIMG, "--version").splitlines()[0] if sh(QIMG, "--version") else "",
        rustc=sh("rustc", "--version"),
        git=sh("git", "-C", ROOT, "describe", "--always", "--dirty"),
        hostname=platform.node())


def main():
    out_json = sys.argv[1]
    os.makedirs(WORK, exist_ok=True)
    t_start = time.monotonic()
    res = dict(quick=QUICK, cfg=CFG, machine=machine(), load_start=os.getloadavg())
    sections = [("imgbench", section_imgbench), ("snap", section_snap), ("import", section_import),
                ("boot", section_boot), ("fio", section_fio)]
    for name, fn in sections:
        if ONLY and name not in ONLY:
            continue
        t0 = time.monotonic()
        res[name] = fn()
        res[name]["seconds"] = time.monotonic() - t0
        res["load_end"] = os.getloadavg()
        with open(out_json, "w") as fh:  # partial results survive a later failure
            json.dump(res, fh, indent=1)
    res["load_end"] = os.getloadavg()
    res["seconds"] = time.monotonic() - t_start
    with open(out_json, "w") as fh:
        json.dump(res, fh, indent=1)
    log(f"measurements done in {res['seconds'] / 60:.1f} min -> {out_json}")


if __name__ == "__main__":
    main()
