#!/usr/bin/env python3
"""Runs the HDFS benchmark (issue 13) and writes its results as JSON
(argv[1]); bench/hdfs_render.py turns that into the "HDFS" section of
docs/benchmarks.md. Started by bench/hdfs-bench.sh, which builds everything,
starts a MiniDFSCluster and passes the paths in the environment:

  QEMU_BIN, HLFS_CLI, HLFS_ROOT, BENCH_WORK, GUEST_DISK   as for bench/report.py
  HDFS_URI        hdfs://127.0.0.1:PORT of the cluster
  HDFS_CEILING    the hdfs_ceiling example (engine/examples/hdfs_ceiling.rs)
  HLFS_BENCH_QUICK=1   small sizes, 2 repetitions (development)
  BENCH_ONLY      comma-separated subset: imgbench (with the ceiling), fio
  BENCH_REPS, BENCH_FIO_REPS   repetitions (default 5 and 3; quick 2 and 1)

Three sides, in the same run: a raw file and a local hlfs volume
(`hlfs:local://`) in the work dir, and an hlfs volume on the cluster
(`hlfs:hdfs://`). Plus the ceiling: a plain hdfs-native client writing and
reading one file of the same size on the same cluster. Within each
repetition the ceiling and the three sides run back to back, so they see
the same machine conditions; the report gives medians and ranges, and
ratios of medians. It is a benchmark, not a test: it fails only if a tool
fails, never on a number.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report as R  # noqa: E402  (guest_run, parse_fio, stats, machine, run, log)

WORK = os.environ["BENCH_WORK"]
URI = os.environ["HDFS_URI"].rstrip("/")
CEILING = os.environ["HDFS_CEILING"]
QIMG = R.QIMG
HLFS = R.HLFS
QUICK = os.environ.get("HLFS_BENCH_QUICK", "") not in ("", "0")
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
SIDES = ["raw", "local", "hdfs"]
STEP_BLOCKS = 65521  # prime: a permutation of any power-of-two block count (bench/qemu-bench.sh)

if QUICK:
    CFG = dict(reps=2, fio_reps=1, mib=64, n_flush64=2048, n_flush1=128, n_read=1024,
               fio_mib=64, fio_runtime=2)
else:
    CFG = dict(reps=5, fio_reps=3, mib=512, n_flush64=16384, n_flush1=1024, n_read=8192,
               fio_mib=512, fio_runtime=5)
CFG["reps"] = int(os.environ.get("BENCH_REPS") or CFG["reps"])
CFG["fio_reps"] = int(os.environ.get("BENCH_FIO_REPS") or CFG["fio_reps"])
CACHE = "none"  # QEMU's cache mode for every run (qemu-img bench -t, -drive cache=)

log = R.log
run = R.run
stats = R.stats


def img(side, name):
    return {"raw": f"{WORK}/{name}.raw", "local": f"hlfs:local://{WORK}/{name}",
            "hdfs": f"hlfs:{URI}/bench/{name}"}[side]


def fargs(side):
    return ["-f", "raw"] if side == "raw" else []


def remove(side, name):
    if side == "raw":
        try:
            os.unlink(img(side, name))
        except FileNotFoundError:
            pass
    elif side == "local":
        shutil.rmtree(f"{WORK}/{name}", ignore_errors=True)
    else:
        uri = img(side, name)[len("hlfs:"):]
        p = subprocess.run([HLFS, "delete", uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode not in (0, 3):  # 3: not found
            sys.exit(f"[hdfs-report] FAIL: hlfs delete {uri} exited {p.returncode}:\n{p.stdout}")


def create(side, name, mib):
    remove(side, name)
    run([QIMG, "create", "-q", *fargs(side), img(side, name), f"{mib}M"], f"qemu-img create {side}")


def fill(side, name, mib):
    run([QIMG, "bench", *fargs(side), "-w", "-t", "writeback", "-d", "32", "-s", "1M", "-S", "1M",
         "-c", str(mib), "--pattern=0x3c", img(side, name)], f"fill {side}")


def drop_cache(side, name):
    """posix_fadvise(DONTNEED) of the image's local files before a -t none
    run (as bench/report.py does); an HDFS volume has none here (its
    DataNodes' storage is Hadoop's business)."""
    if side == "raw":
        paths = [img(side, name)]
    elif side == "local":
        paths = [os.path.join(d, f) for d, _, fs in os.walk(f"{WORK}/{name}") for f in fs]
    else:
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def prewarm():
    os.sync()
    path = os.path.join(WORK, "prewarm")
    run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={min(CFG['mib'], 512)}", "status=none"])
    os.unlink(path)


# ---------------------------------------------------------------------------
def ceiling():
    """One run of engine/examples/hdfs_ceiling.rs: its JSON."""
    out = run([CEILING, "--url", URI, "--dir", "/bench/ceiling", "--mib", str(CFG["mib"]),
               "--count-4k", str(CFG["n_flush1"]), "--count-4k-batched", str(CFG["n_flush64"])], "hdfs_ceiling")
    return json.loads(out.strip().splitlines()[-1])


def section_imgbench():
    mib, reps = CFG["mib"], CFG["reps"]
    blocks = mib * 256
    step = str(STEP_BLOCKS * 4096)
    # (key, label, image, unit, requests, args, ceiling key and field)
    work = [
        ("seqwrite_1m", "1M sequential write, QD32", "fresh", "MiB/s", mib,
         ["-w", "-s", "1M", "-S", "1M", "-d", "32"], ("seq_1m", "write_mib_s")),
        ("seqread_1m", "1M sequential read, QD32", "filled", "MiB/s", mib,
         ["-s", "1M", "-S", "1M", "-d", "32"], ("seq_1m", "read_mib_s")),
        ("randwrite_flush1", "4K random write, QD1, flush after every write", "fresh", "IOPS", CFG["n_flush1"],
         ["-w", "-s", "4k", "-S", step, "-d", "1", "--flush-interval=1"], ("hsync_4k", "ops_s")),
        ("randwrite_flush64", "4K random write, QD32, flush every 64", "fresh", "IOPS", CFG["n_flush64"],
         ["-w", "-s", "4k", "-S", step, "-d", "32", "--flush-interval=64"], ("hsync_4k_every64", "ops_s")),
        ("randread_qd32", "4K random read, QD32", "filled", "IOPS", CFG["n_read"],
         ["-s", "4k", "-S", step, "-d", "32"], None),
    ]
    log(f"qemu-img bench -t {CACHE}: {mib} MiB images, {reps} rounds, with the hdfs-native ceiling in each")
    for s in SIDES:
        create(s, "filled", mib)
        fill(s, "filled", mib)
    times = {(k, s): [] for k, *_ in work for s in SIDES}
    walls = {(k, s): [] for k, *_ in work for s in SIDES}
    ceil = []
    for r in range(reps):
        prewarm()
        ceil.append(ceiling())
        c = ceil[-1]
        log(f"ceiling round {r + 1}: write {c['seq_1m']['write_mib_s']:.0f} MiB/s, read "
            f"{c['seq_1m']['read_mib_s']:.0f} MiB/s, hsync each 4K {c['hsync_4k']['ops_s']:.0f}/s")
        for key, label, image, unit, n, args, _ in work:
            for s in SIDES:
                name = "filled" if image == "filled" else f"w{r}"
                if image == "fresh":
                    create(s, name, mib)
                extra = ["-c", str(n)]
                if image == "filled" and "4k" in args:
                    extra += ["-o", str(((r + 1) * 7919 % blocks) * 4096)]  # another start per round
                if "-w" in args:
                    extra.append("--pattern=0xa5")
                os.sync()
                drop_cache(s, name)
                prewarm()
                t0 = time.monotonic()
                out = run([QIMG, "bench", *fargs(s), "-t", CACHE, *args, *extra, img(s, name)],
                          f"qemu-img bench {s} {key}")
                wall = time.monotonic() - t0
                m = re.search(r"Run completed in ([0-9.]+) seconds", out)
                if not m:
                    sys.exit(f"[hdfs-report] FAIL: no 'Run completed' from qemu-img bench:\n{out}")
                times[key, s].append(float(m.group(1)))
                walls[key, s].append(wall)
                if image == "fresh":
                    remove(s, name)
        log(f"qemu-img bench round {r + 1}/{reps} done (load {os.getloadavg()[0]:.1f})")
    for s in SIDES:
        remove(s, "filled")
    rows = []
    for key, label, image, unit, n, args, ck in work:
        row = dict(key=key, label=label, unit=unit, image=image, requests=n, args=" ".join(args))
        for s in SIDES:
            row[s] = stats([n / t for t in times[key, s]])
            row[s + "_wall"] = stats([n / t for t in walls[key, s]])
        if ck:
            row["ceiling_key"] = list(ck)
            row["ceiling"] = stats([c[ck[0]][ck[1]] for c in ceil])
        rows.append(row)
    cstats = {k: {f: stats([c[k][f] for c in ceil]) for f in ceil[0][k] if f.endswith(("_s", "_mib_s"))}
              for k in ("seq_1m", "seq_64k", "seq_1m_64m_files", "read_4k_scattered", "hsync_4k",
                        "hsync_4k_every64")}
    return dict(mib=mib, reps=reps, cache=CACHE, rows=rows, ceiling=cstats, ceiling_runs=ceil,
                replication=ceil[0]["replication"], block_size=ceil[0]["block_size"])


# ---------------------------------------------------------------------------
def fio_jobs():
    rt = CFG["fio_runtime"]
    common = f"ioengine=libaio,direct=1,time_based=1,runtime={rt},randrepeat=0,norandommap=1"
    return [
        ("seqread_1m", "1M sequential read, QD8", "read", "MiB/s", f"name=seqread_1m,rw=read,bs=1M,iodepth=8,{common}"),
        ("randread_qd32", "4K random read, QD32", "read", "IOPS",
         f"name=randread_qd32,rw=randread,bs=4k,iodepth=32,{common}"),
        ("seqwrite_1m", "1M sequential write, QD8", "write", "MiB/s",
         f"name=seqwrite_1m,rw=write,bs=1M,iodepth=8,{common}"),
        ("randwrite_fsync", "4K random write, QD1, fsync after every write", "write", "IOPS",
         f"name=randwrite_fsync,rw=randwrite,bs=4k,iodepth=1,fsync=1,{common}"),
    ]


def section_fio():
    mib, reps = CFG["fio_mib"], CFG["fio_reps"]
    jobs = fio_jobs()
    cmd = ";".join(f"fio:{spec}" for *_, spec in jobs)
    log(f"fio in the guest: {mib} MiB data disk (cache={CACHE}), {len(jobs)} jobs x {CFG['fio_runtime']} s, "
        f"{reps} rounds")
    boot = f"{WORK}/fio-boot.raw"
    run(["cp", "--sparse=always", os.environ["GUEST_DISK"], boot])
    for s in SIDES:
        create(s, "fiodata", mib)
        fill(s, "fiodata", mib)
    vals = {(k, s): [] for k, *_ in jobs for s in SIDES}
    rss = {s: [] for s in SIDES}
    timeout = 60 + len(jobs) * (CFG["fio_runtime"] * 2 + 10)
    for r in range(reps):
        for s in SIDES:
            prewarm()
            data = f"file={img(s, 'fiodata')},if=virtio,cache={CACHE}" + (",format=raw" if s == "raw" else "")
            _, t_exit, maxrss, text = R.guest_run(f"hfio-{s}-{r}", f"file={boot},if=virtio,format=raw",
                                                  data, cmd, kernel=True, timeout=timeout)
            res = R.parse_fio(text)
            for key, label, side, unit, spec in jobs:
                if key not in res:
                    sys.exit(f"[hdfs-report] FAIL: no fio result for {key} ({s}):\n{text[-3000:]}")
                j = res[key]["jobs"][0][side]
                vals[key, s].append(j["iops"] if unit == "IOPS" else j["bw"] / 1024.0)
            rss[s].append(maxrss)
            log(f"fio {s} round {r + 1}/{reps}: {t_exit:.1f} s, QEMU peak RSS {maxrss:.0f} MiB")
    for s in SIDES:
        remove(s, "fiodata")
    os.unlink(boot)
    rows = []
    for key, label, side, unit, spec in jobs:
        row = dict(key=key, label=label, unit=unit)
        for s in SIDES:
            row[s] = stats(vals[key, s])
        rows.append(row)
    return dict(data_mib=mib, runtime=CFG["fio_runtime"], reps=reps, cache=CACHE, rows=rows,
                specs=[spec for *_, spec in jobs], rss={s: stats(rss[s]) for s in SIDES})


def main():
    out_json = sys.argv[1]
    os.makedirs(WORK, exist_ok=True)
    t_start = time.monotonic()
    res = dict(quick=QUICK, cfg=CFG, machine=R.machine(), load_start=os.getloadavg(),
               cluster=dict(uri=URI, datanodes=int(os.environ.get("HLFS_HDFS_DATANODES") or 4)))
    if os.environ.get("HLFS_BENCH_NOTE"):
        res["note"] = os.environ["HLFS_BENCH_NOTE"]
    for name, fn in (("imgbench", section_imgbench), ("fio", section_fio)):
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
