//! The engine against a plain file doing the same I/O on the same filesystem.
//!
//! Every workload runs in one process through `hlfs::Volume` (a local volume
//! in a temporary directory under /tmp) and through `pwrite`/`pread` on a
//! preallocated raw file in the same directory. Writes are also compared
//! with a log-like baseline, the same bytes appended to a growing file,
//! which separates what the engine adds from what any log pays. Criterion
//! reports its statistics per group. Afterwards the bench prints its own
//! table of engine/raw throughput ratios, each side the median of several
//! timed rounds run alternately, so the ratios can be read without parsing
//! criterion's output.
//!
//! Snapshot and clone creation are timed on an empty volume and on one with
//! many mapped blocks (default 1M = 4 GiB written in 1 MiB writes), to show
//! whether their cost depends on how much the volume holds.
//!
//! Environment:
//! - `HLFS_BENCH_QUICK=1`: small sizes and short measurements (smoke run).
//! - `HLFS_BENCH_BIG_BLOCKS=N`: mapped blocks of the "big" volume.
//! - `HLFS_BENCH_DIR=/path`: where the temporary directory goes (default /tmp).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use hlfs::{clone_volume, OpenOptions, Volume, BLOCK_SIZE};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BS: usize = BLOCK_SIZE as usize;
/// Writes between flushes (engine) or fdatasyncs (raw files) in the "sync every" variants.
const FLUSH_EVERY: u64 = 64;

/// Sizes and repetition counts; `quick` shrinks everything for smoke runs.
struct Cfg {
    quick: bool,
    /// Virtual size of the volumes and the raw files used for 4K/1M I/O.
    vol_size: u64,
    /// Mapped blocks of the "big" volume for snapshot/clone timing.
    big_blocks: u64,
    /// Timed rounds per workload in the ratio table (the median is reported).
    rounds: usize,
    /// Operations per round.
    rand_ops: u64,
    flush_ops: u64,
    read_ops: u64,
    seq_ops: u64,
    snap_reps: usize,
    clone_reps: usize,
}

impl Cfg {
    fn from_env() -> Cfg {
        let quick = std::env::var("HLFS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut c = if quick {
            Cfg {
                quick,
                vol_size: 64 * MIB,
                big_blocks: 16 * 1024,
                rounds: 3,
                rand_ops: 2000,
                flush_ops: 256,
                read_ops: 5000,
                seq_ops: 32,
                snap_reps: 10,
                clone_reps: 3,
            }
        } else {
            Cfg {
                quick,
                vol_size: 256 * MIB,
                big_blocks: 1 << 20,
                rounds: 7,
                rand_ops: 20_000,
                flush_ops: 2048,
                read_ops: 50_000,
                seq_ops: 256,
                snap_reps: 31,
                clone_reps: 5,
            }
        };
        if let Some(n) = std::env::var("HLFS_BENCH_BIG_BLOCKS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.big_blocks = n;
        }
        c
    }

    fn criterion(&self) -> Criterion {
        let (warm, meas) = if self.quick { (100, 300) } else { (500, 2000) };
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(warm))
            .measurement_time(Duration::from_millis(meas))
            .without_plots()
            .configure_from_args()
    }
}

/// xorshift64*: reproducible offsets without pulling an RNG into the timing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A random 4 KiB-aligned offset inside `size` bytes.
    fn block_off(&mut self, size: u64) -> u64 {
        (self.next() % (size / BLOCK_SIZE)) * BLOCK_SIZE
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len / 8).flat_map(|_| r.next().to_le_bytes()).collect()
}

fn uri(p: &Path) -> String {
    format!("local://{}", p.display())
}

fn new_volume(dir: &Path, name: &str, size: u64) -> (Volume, String) {
    let u = uri(&dir.join(name));
    Volume::create(&u, size).expect("create volume");
    let v = Volume::open(&u, &OpenOptions::default()).expect("open volume");
    (v, u)
}

/// A raw file of `size` bytes, written out and synced so no write in the
/// benchmark allocates blocks.
fn new_raw(dir: &Path, name: &str, size: u64) -> File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(name))
        .expect("raw file");
    let chunk = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < size {
        f.write_all_at(&chunk, off).expect("prefill raw");
        off += MIB;
    }
    f.sync_data().expect("sync raw");
    f
}

/// Fills both with 1 MiB writes of non-zero data and makes them durable.
fn fill(v: &Volume, f: &File, size: u64) {
    let mut off = 0;
    while off < size {
        let d = pattern(MIB as usize, off / MIB + 1);
        v.write(off, &d).expect("fill volume");
        f.write_all_at(&d, off).expect("fill raw");
        off += MIB;
    }
    v.flush().expect("flush volume");
    f.sync_data().expect("sync raw");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// Median over `rounds` of `bytes / seconds` (MiB/s) for each side. Sides
/// run alternately so all see the same drift (page cache, writeback); each
/// returns the time of its own timed part, so setup can be left out.
fn median_mbps(rounds: usize, bytes: u64, sides: &mut [&mut dyn FnMut() -> Duration]) -> Vec<f64> {
    let mut v = vec![Vec::new(); sides.len()];
    for _ in 0..rounds {
        for (i, side) in sides.iter_mut().enumerate() {
            v[i].push(bytes as f64 / side().as_secs_f64() / MIB as f64);
        }
    }
    v.into_iter().map(median).collect()
}

/// Times `f`.
fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The log-like baseline: a file that only grows, written with `write(2)`
/// at its end. Like the engine's log, and unlike an in-place raw image, it
/// lands on fresh page-cache pages and grows the file (so an fdatasync also
/// commits the new size). It persists across rounds, as the engine's log does.
struct RawAppend {
    file: File,
    path: PathBuf,
}

impl RawAppend {
    fn new(path: PathBuf) -> RawAppend {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("append file");
        RawAppend { file, path }
    }

    /// Times `ops` appends of `buf`, with an fdatasync after every
    /// `sync_every` appends if that is not 0.
    fn round(&mut self, ops: u64, buf: &[u8], sync_every: u64) -> Duration {
        timed(|| {
            for i in 1..=ops {
                self.file.write_all(buf).expect("append");
                if sync_every != 0 && i % sync_every == 0 {
                    self.file.sync_data().expect("sync append");
                }
            }
        })
    }
}

impl Drop for RawAppend {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Median latency of `reps` calls of `f`, in seconds.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    median(v)
}

/// One line of the summary table.
enum Row {
    /// Throughput of the engine, the in-place raw file, and (for writes) the
    /// raw append baseline.
    Ratio {
        what: String,
        engine_mbps: f64,
        raw_mbps: f64,
        append_mbps: Option<f64>,
        op_bytes: u64,
    },
    Latency {
        what: String,
        small: f64,
        big: f64,
        big_label: String,
    },
    Note(String),
}

fn fmt_secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.2} s", s)
    }
}

fn print_table(cfg: &Cfg, rows: &[Row]) {
    println!();
    println!(
        "== HLFS engine vs raw file: medians of {} rounds (quick={}) ==",
        cfg.rounds, cfg.quick
    );
    println!(
        "{:<32} {:>12} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8}",
        "workload",
        "engine MiB/s",
        "raw MiB/s",
        "engine op",
        "raw op",
        "eng/raw",
        "append MiB/s",
        "eng/app"
    );
    for r in rows {
        if let Row::Ratio {
            what,
            engine_mbps,
            raw_mbps,
            append_mbps,
            op_bytes,
        } = r
        {
            let op = |mbps: f64| fmt_secs(*op_bytes as f64 / (mbps * MIB as f64));
            let (app, app_ratio) = match append_mbps {
                Some(a) => (format!("{a:.1}"), format!("{:.3}", engine_mbps / a)),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<32} {:>12.1} {:>10.1} {:>10} {:>10} {:>8.3} {:>12} {:>8}",
                what,
                engine_mbps,
                raw_mbps,
                op(*engine_mbps),
                op(*raw_mbps),
                engine_mbps / raw_mbps,
                app,
                app_ratio
            );
        }
    }
    println!("(raw: pwrite/pread in place on a preallocated file; append: the same bytes appended to a new file)");
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>16} {:>8}",
        "metadata operation", "empty volume", "big volume", "big =", "big/empty"
    );
    for r in rows {
        if let Row::Latency {
            what,
            small,
            big,
            big_label,
        } = r
        {
            println!(
                "{:<34} {:>14} {:>14} {:>16} {:>8.2}",
                what,
                fmt_secs(*small),
                fmt_secs(*big),
                big_label,
                big / small
            );
        }
    }
    for r in rows {
        if let Row::Note(n) = r {
            println!("note: {n}");
        }
    }
    println!();
}

fn bench_random_write(c: &mut Criterion, cfg: &Cfg, dir: &Path, rows: &mut Vec<Row>) {
    let size = cfg.vol_size;
    let (v, _) = new_volume(dir, "rw", size);
    let raw = new_raw(dir, "rw.raw", size);
    let buf = pattern(BS, 7);
    let mut g = c.benchmark_group("randwrite_4k");
    g.throughput(Throughput::Bytes(BLOCK_SIZE));
    let mut rng = Rng(1);
    g.bench_function("engine", |b| {
        b.iter(|| v.write(rng.block_off(size), &buf).unwrap())
    });
    let mut rng = Rng(1);
    g.bench_function("raw", |b| {
        b.iter(|| raw.write_all_at(&buf, rng.block_off(size)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("randwrite_4k_flush64");
    g.throughput(Throughput::Bytes(BLOCK_SIZE));
    let (mut rng, mut n) = (Rng(2), 0u64);
    g.bench_function("engine", |b| {
        b.iter(|| {
            v.write(rng.block_off(size), &buf).unwrap();
            n += 1;
            if n % FLUSH_EVERY == 0 {
                v.flush().unwrap();
            }
        })
    });
    let (mut rng, mut n) = (Rng(2), 0u64);
    g.bench_function("raw", |b| {
        b.iter(|| {
            raw.write_all_at(&buf, rng.block_off(size)).unwrap();
            n += 1;
            if n % FLUSH_EVERY == 0 {
                raw.sync_data().unwrap();
            }
        })
    });
    g.finish();

    let (mut re, mut rr) = (Rng(3), Rng(3));
    let mut app = RawAppend::new(dir.join("rw.append"));
    let ops = cfg.rand_ops;
    let m = median_mbps(
        cfg.rounds,
        ops * BLOCK_SIZE,
        &mut [
            &mut || timed(|| (0..ops).for_each(|_| v.write(re.block_off(size), &buf).unwrap())),
            &mut || {
                timed(|| (0..ops).for_each(|_| raw.write_all_at(&buf, rr.block_off(size)).unwrap()))
            },
            &mut || app.round(ops, &buf, 0),
        ],
    );
    rows.push(Row::Ratio {
        what: "4K random write".into(),
        engine_mbps: m[0],
        raw_mbps: m[1],
        append_mbps: Some(m[2]),
        op_bytes: BLOCK_SIZE,
    });
    // Start both from a durable state so the flush variant does not pay for
    // the no-flush rounds' dirty pages.
    v.flush().unwrap();
    raw.sync_data().unwrap();
    app.file.sync_data().unwrap();
    let ops = cfg.flush_ops;
    let m = median_mbps(
        cfg.rounds,
        ops * BLOCK_SIZE,
        &mut [
            &mut || {
                timed(|| {
                    for i in 1..=ops {
                        v.write(re.block_off(size), &buf).unwrap();
                        if i % FLUSH_EVERY == 0 {
                            v.flush().unwrap();
                        }
                    }
                })
            },
            &mut || {
                timed(|| {
                    for i in 1..=ops {
                        raw.write_all_at(&buf, rr.block_off(size)).unwrap();
                        if i % FLUSH_EVERY == 0 {
                            raw.sync_data().unwrap();
                        }
                    }
                })
            },
            &mut || app.round(ops, &buf, FLUSH_EVERY),
        ],
    );
    rows.push(Row::Ratio {
        what: format!("4K random write, sync every {FLUSH_EVERY}"),
        engine_mbps: m[0],
        raw_mbps: m[1],
        append_mbps: Some(m[2]),
        op_bytes: BLOCK_SIZE,
    });
    v.close().unwrap();
}

fn bench_random_read(c: &mut Criterion, cfg: &Cfg, dir: &Path, rows: &mut Vec<Row>) {
    let size = cfg.vol_size;
    let (v, _) = new_volume(dir, "rr", size);
    let raw = new_raw(dir, "rr.raw", size);
    fill(&v, &raw, size);
    let mut buf = vec![0u8; BS];
    let mut g = c.benchmark_group("randread_4k");
    g.throughput(Throughput::Bytes(BLOCK_SIZE));
    let mut rng = Rng(4);
    g.bench_function("engine", |b| {
        b.iter(|| v.read(rng.block_off(size), &mut buf).unwrap())
    });
    let mut rng = Rng(4);
    g.bench_function("raw", |b| {
        b.iter(|| raw.read_exact_at(&mut buf, rng.block_off(size)).unwrap())
    });
    g.finish();

    // Both sides must return the same bytes, or the comparison means nothing.
    let (mut a, mut b) = (vec![0u8; BS], vec![0u8; BS]);
    let mut rng = Rng(5);
    for _ in 0..256 {
        let off = rng.block_off(size);
        v.read(off, &mut a).unwrap();
        raw.read_exact_at(&mut b, off).unwrap();
        assert_eq!(a, b, "engine and raw file disagree at offset {off}");
    }

    let (mut re, mut rr) = (Rng(6), Rng(6));
    let ops = cfg.read_ops;
    let mut eb = vec![0u8; BS];
    let mut rb = vec![0u8; BS];
    let m = median_mbps(
        cfg.rounds,
        ops * BLOCK_SIZE,
        &mut [
            &mut || timed(|| (0..ops).for_each(|_| v.read(re.block_off(size), &mut eb).unwrap())),
            &mut || {
                timed(|| {
                    (0..ops).for_each(|_| raw.read_exact_at(&mut rb, rr.block_off(size)).unwrap())
                })
            },
        ],
    );
    rows.push(Row::Ratio {
        what: "4K random read (after fill)".into(),
        engine_mbps: m[0],
        raw_mbps: m[1],
        append_mbps: None,
        op_bytes: BLOCK_SIZE,
    });
    v.close().unwrap();
}

fn bench_seq_write(c: &mut Criterion, cfg: &Cfg, dir: &Path, rows: &mut Vec<Row>) {
    let size = cfg.vol_size;
    let (v, _) = new_volume(dir, "sw", size);
    let raw = new_raw(dir, "sw.raw", size);
    let buf = pattern(MIB as usize, 9);
    let mut g = c.benchmark_group("seqwrite_1m");
    g.throughput(Throughput::Bytes(MIB));
    let mut off = 0;
    g.bench_function("engine", |b| {
        b.iter(|| {
            v.write(off, &buf).unwrap();
            off = (off + MIB) % size;
        })
    });
    let mut off = 0;
    g.bench_function("raw", |b| {
        b.iter(|| {
            raw.write_all_at(&buf, off).unwrap();
            off = (off + MIB) % size;
        })
    });
    g.finish();
    v.flush().unwrap();
    raw.sync_data().unwrap();

    let ops = cfg.seq_ops;
    let (mut eo, mut ro) = (0u64, 0u64);
    let mut app = RawAppend::new(dir.join("sw.append"));
    let m = median_mbps(
        cfg.rounds,
        ops * MIB,
        &mut [
            &mut || {
                timed(|| {
                    for _ in 0..ops {
                        v.write(eo, &buf).unwrap();
                        eo = (eo + MIB) % size;
                    }
                })
            },
            &mut || {
                timed(|| {
                    for _ in 0..ops {
                        raw.write_all_at(&buf, ro).unwrap();
                        ro = (ro + MIB) % size;
                    }
                })
            },
            &mut || app.round(ops, &buf, 0),
        ],
    );
    rows.push(Row::Ratio {
        what: "1M sequential write".into(),
        engine_mbps: m[0],
        raw_mbps: m[1],
        append_mbps: Some(m[2]),
        op_bytes: MIB,
    });
    v.close().unwrap();
}

/// Allocated bytes under `p` (a file or a directory tree).
fn disk_usage(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| disk_usage(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// This process's resident set size in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// A volume with `big_blocks` mapped blocks, written in 1 MiB writes, then
/// closed (which writes its checkpoint, as for any volume that was ever
/// closed) and reopened read-write. Reports what each step cost.
fn big_volume(cfg: &Cfg, dir: &Path, rows: &mut Vec<Row>) -> (Volume, String) {
    let bytes = cfg.big_blocks * BLOCK_SIZE;
    // Sparse: twice the written size, so half the address space is unmapped.
    let u = uri(&dir.join("big"));
    Volume::create(&u, (bytes * 2).max(MIB)).unwrap();
    // No checkpoint during the fill, so that close times exactly one.
    let v = Volume::open(
        &u,
        &OpenOptions {
            checkpoint_every: u64::MAX,
            ..Default::default()
        },
    )
    .unwrap();
    let buf = pattern(MIB as usize, 11);
    let t = Instant::now();
    let mut off = 0;
    while off < bytes {
        let n = (bytes - off).min(MIB) as usize;
        v.write(off, &buf[..n]).unwrap();
        off += n as u64;
    }
    let write_s = t.elapsed().as_secs_f64();
    let flush_s = timed(|| v.flush().unwrap()).as_secs_f64();
    let close_s = timed(|| v.close().unwrap()).as_secs_f64();
    let ckpt_bytes: u64 = std::fs::read_dir(dir.join("big"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let v = Volume::open(&u, &OpenOptions::default()).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    rows.push(Row::Note(format!(
        "big volume: {} blocks ({} MiB) written in 1 MiB writes in {:.1} s ({:.0} MiB/s), then flush {:.2} s",
        cfg.big_blocks,
        bytes / MIB,
        write_s,
        bytes as f64 / MIB as f64 / write_s,
        flush_s,
    )));
    rows.push(Row::Note(format!(
        "big volume: close incl. checkpoint of {:.1} MiB: {:.2} s; reopen read-write (clean index): {}",
        ckpt_bytes as f64 / MIB as f64,
        close_s,
        fmt_secs(open_s)
    )));
    let rss_before = rss();
    let t = Instant::now();
    let ro = Volume::open(&u, &OpenOptions::read_only()).unwrap();
    let ro_s = t.elapsed().as_secs_f64();
    // Reads through the view pull checkpoint chunks into its cache.
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut rng = Rng(5);
    let reads = 10_000u64;
    let t = Instant::now();
    for _ in 0..reads {
        ro.read(rng.block_off(bytes), &mut b).unwrap();
    }
    let read_s = t.elapsed().as_secs_f64();
    let rss_grew = rss().saturating_sub(rss_before);
    drop(ro);
    rows.push(Row::Note(format!(
        "big volume: read-only open (checkpoint searched in place + log tail): {}; \
         {reads} random 4K reads through it: {:.1} µs each; process RSS +{:.1} MiB",
        fmt_secs(ro_s),
        read_s * 1e6 / reads as f64,
        rss_grew as f64 / MIB as f64
    )));
    (v, u)
}

fn bench_metadata(c: &mut Criterion, cfg: &Cfg, dir: &Path, rows: &mut Vec<Row>) {
    let (small, small_uri) = new_volume(dir, "small", 64 * MIB);
    small.snapshot_create("base").unwrap();
    let (big, big_uri) = big_volume(cfg, dir, rows);
    big.snapshot_create("base").unwrap();
    let big_label = format!("{} blocks", cfg.big_blocks);

    // Clones first: the snapshot group below adds thousands of snapshots.
    let clones = dir.join("clones");
    std::fs::create_dir_all(&clones).unwrap();
    let mut n = 0u64;
    let mut clone = |base: &str| {
        n += 1;
        let dst = uri(&clones.join(format!("c{n}")));
        clone_volume(&format!("{base}%base"), &dst, None).unwrap();
    };
    // Clone creation opens the base read-only, which builds a private index
    // of the base: its cost grows with the base. Criterion needs at least 11
    // runs per benchmark, so a slow big clone is timed only by the median below.
    let probe = timed(|| clone(&big_uri));
    let mut g = c.benchmark_group("clone_create");
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(BenchmarkId::new("mapped_blocks", 0), |b| {
        b.iter(|| clone(&small_uri))
    });
    if probe < Duration::from_millis(500) {
        g.bench_function(BenchmarkId::new("mapped_blocks", cfg.big_blocks), |b| {
            b.iter(|| clone(&big_uri))
        });
    } else {
        rows.push(Row::Note(format!(
            "clone create on the big volume took {} once; left out of criterion, timed as a median of {} runs only",
            fmt_secs(probe.as_secs_f64()),
            cfg.clone_reps
        )));
    }
    g.finish();
    let s = median_secs(cfg.clone_reps, || clone(&small_uri));
    let b = median_secs(cfg.clone_reps, || clone(&big_uri));
    rows.push(Row::Latency {
        what: "clone create".into(),
        small: s,
        big: b,
        big_label: big_label.clone(),
    });

    let mut g = c.benchmark_group("snapshot_create");
    g.sampling_mode(SamplingMode::Flat);
    let mut n = 0u64;
    let mut snap = |v: &Volume| {
        n += 1;
        v.snapshot_create(&format!("s{n}")).unwrap();
    };
    g.bench_function(BenchmarkId::new("mapped_blocks", 0), |b| {
        b.iter(|| snap(&small))
    });
    g.bench_function(BenchmarkId::new("mapped_blocks", cfg.big_blocks), |b| {
        b.iter(|| snap(&big))
    });
    g.finish();
    let s = median_secs(cfg.snap_reps, || snap(&small));
    let b = median_secs(cfg.snap_reps, || snap(&big));
    rows.push(Row::Latency {
        what: "snapshot create".into(),
        small: s,
        big: b,
        big_label,
    });
    small.close().unwrap();
    big.close().unwrap();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn bench_dir() -> PathBuf {
    std::env::var_os("HLFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn main() {
    let cfg = Cfg::from_env();
    let tmp = tempfile::Builder::new()
        .prefix("hlfs-bench-")
        .tempdir_in(bench_dir())
        .expect("temp dir");
    let dir = tmp.path();
    let started = Instant::now();
    let load_before = loadavg();
    let mut c = cfg.criterion();
    let mut rows = Vec::new();
    bench_random_write(&mut c, &cfg, dir, &mut rows);
    bench_random_read(&mut c, &cfg, dir, &mut rows);
    bench_seq_write(&mut c, &cfg, dir, &mut rows);
    bench_metadata(&mut c, &cfg, dir, &mut rows);
    c.final_summary();
    rows.push(Row::Note(format!(
        "total bench time {:.0} s in {}, which holds {:.1} GiB at the end",
        started.elapsed().as_secs_f64(),
        dir.display(),
        disk_usage(dir) as f64 / (1u64 << 30) as f64
    )));
    // Other work on the machine skews every number; say how busy it was.
    rows.push(Row::Note(format!(
        "load average at start: {load_before}; at end: {}",
        loadavg()
    )));
    print_table(&cfg, &rows);
}
