//! Write amplification of the segment cleaner under random 4 KiB
//! overwrites (issue 6's benchmark; not a test).
//!
//!     cargo run --release -p hlfs --example wa_bench -- [uniform|hotcold] [OUT.csv]
//!
//! A volume is filled whole, so its live data is its size, and given a log
//! budget of 1.5 times that (live data fills two thirds of it). Random
//! 4 KiB overwrites then run for `HLFS_WA_ROUNDS` (default 3) times the
//! volume's size; whenever the segment files exceed the budget, the cleaner
//! runs one pass of one segment (as the background cleaner would, without
//! its timer, so the run is deterministic). `hotcold` sends 90% of the
//! writes to 10% of the blocks.
//!
//! Write amplification = bytes appended to the backend (guest writes,
//! cleaner copies, checkpoints) / bytes the guest wrote, measured over the
//! overwrite phase. The CSV has one row per 1/64 of the run:
//! `guest_mib,backend_mib,log_mib,live_mib,wa_cumulative,wa_window`.
//! Sizes: `HLFS_WA_SIZE` (default 256M), `HLFS_WA_SEGMENT` (default 4M).

use hlfs::backend::mem::{registry_put, MemBackend};
use hlfs::backend::Backend;
use hlfs::{GcOptions, OpenOptions, Volume};
use rand::{Rng, SeedableRng};
use std::io::Write;

const BS: u64 = 4096;

fn env_size(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| hlfs::parse_size(&v).ok())
        .unwrap_or(default)
}

fn segment_bytes(mem: &MemBackend, dir: &str) -> u64 {
    mem.paths()
        .iter()
        .filter(|p| {
            p.starts_with(&format!("{dir}/seg-")) || p.starts_with(&format!("{dir}/retired-"))
        })
        .map(|p| mem.open_read(p).and_then(|f| f.len()).unwrap_or(0))
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "uniform".into());
    let out = args.next();
    if mode != "uniform" && mode != "hotcold" {
        return Err(format!("unknown mode {mode:?}: use uniform or hotcold").into());
    }
    let size = env_size("HLFS_WA_SIZE", 256 << 20) / BS * BS;
    let seg = env_size("HLFS_WA_SEGMENT", 4 << 20);
    let rounds: u64 = std::env::var("HLFS_WA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let budget = size * 3 / 2;

    let mem = MemBackend::new();
    registry_put("wa", mem.clone());
    let index = tempfile::tempdir()?;
    let uri = "mem://wa/v/vol";
    Volume::create(uri, size)?;
    let opts = OpenOptions {
        index_root: Some(index.path().to_path_buf()),
        segment_size: seg,
        checkpoint_every: 1 << 40,
        ..Default::default()
    };
    let v = Volume::open(uri, &opts)?;
    let blocks = size / BS;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut buf = vec![0u8; 256 * BS as usize];
    // Fill: every block live.
    for first in (0..blocks).step_by(256) {
        let n = (blocks - first).min(256) as usize;
        rng.fill(&mut buf[..n * BS as usize]);
        v.write(first * BS, &buf[..n * BS as usize])?;
    }
    v.flush()?;
    let batch: usize = std::env::var("HLFS_WA_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let gc = GcOptions {
        max_utilization: 0.95,
        max_segments: batch,
        retire_grace_secs: 0,
    };
    let total = rounds * blocks;
    let sample = (total / 64).max(1);
    let start_backend = mem.bytes_appended();
    let (mut last_guest, mut last_backend) = (0u64, start_backend);
    let mut rows = Vec::new();
    let mut passes = 0u64;
    let hot = (blocks / 10).max(1);
    let mut block = vec![0u8; BS as usize];
    let t0 = std::time::Instant::now();
    for i in 0..total {
        let b = match mode.as_str() {
            "hotcold" if rng.gen_bool(0.9) => rng.gen_range(0..hot),
            "hotcold" => rng.gen_range(hot..blocks),
            _ => rng.gen_range(0..blocks),
        };
        rng.fill(&mut block[..]);
        v.write(b * BS, &block)?;
        if i % 256 == 255 {
            v.flush()?;
            while segment_bytes(&mem, "/v/vol") > budget {
                let rep = v.gc(&gc, &mut |_, _| {})?;
                passes += 1;
                if rep.segments_cleaned == 0 {
                    break; // nothing cleanable yet: the log runs over budget for now
                }
            }
        }
        if (i + 1) % sample == 0 {
            let guest = (i + 1) * BS;
            let backend = mem.bytes_appended() - start_backend;
            let log = segment_bytes(&mem, "/v/vol");
            let live = v.info()?.live_bytes;
            let window =
                (backend - (last_backend - start_backend)) as f64 / (guest - last_guest) as f64;
            rows.push(format!(
                "{:.2},{:.2},{:.2},{:.2},{:.3},{:.3}",
                guest as f64 / 1048576.0,
                backend as f64 / 1048576.0,
                log as f64 / 1048576.0,
                live as f64 / 1048576.0,
                backend as f64 / guest as f64,
                window
            ));
            last_guest = guest;
            last_backend = mem.bytes_appended();
        }
    }
    let guest = total * BS;
    let backend = mem.bytes_appended() - start_backend;
    let log = segment_bytes(&mem, "/v/vol");
    // Steady state: the second half of the run.
    let half: Vec<f64> = rows[rows.len() / 2..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let steady = half.iter().sum::<f64>() / half.len() as f64;
    println!(
        "mode {mode}: volume {} MiB, segments {} MiB, log budget {} MiB, {} MiB of 4 KiB overwrites in {:.1} s",
        size >> 20,
        seg >> 20,
        budget >> 20,
        guest >> 20,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "write amplification: {:.3} over the run, {:.3} in steady state (second half); final log {:.1} MiB for {:.1} MiB live; {passes} cleaning passes",
        backend as f64 / guest as f64,
        steady,
        log as f64 / 1048576.0,
        v.info()?.live_bytes as f64 / 1048576.0
    );
    if let Some(path) = out {
        let mut f = std::fs::File::create(&path)?;
        writeln!(
            f,
            "guest_mib,backend_mib,log_mib,live_mib,wa_cumulative,wa_window"
        )?;
        for r in rows {
            writeln!(f, "{r}")?;
        }
    }
    v.close()?;
    Ok(())
}
