//! The HDFS ceiling of `bench/hdfs-bench.sh`: what a plain `hdfs-native`
//! client gets from the same cluster, without HLFS. An example, not part of
//! the library's API.
//!
//! ```text
//! cargo run --release -p hlfs --example hdfs_ceiling -- --url hdfs://127.0.0.1:PORT \
//!     --dir /bench/ceiling --mib 512 --count-4k 1024 --count-4k-batched 16384
//! ```
//!
//! Measures, in this order, one file each (deleted afterwards):
//!
//! - `seq_1m`: `--mib` MiB written sequentially to one new file in 1 MiB
//!   appends, one hsync at the end, close; then read back sequentially in
//!   1 MiB reads (`read_range_buf`, as the engine reads);
//!   then `--count-4k` reads of 4 KiB at scattered offsets of that file,
//!   one at a time (`read_4k_scattered`);
//! - `seq_64k`: the same in 64 KiB appends and 64 KiB reads;
//! - `seq_1m_64m_files`: the 1 MiB appends into files of 64 MiB (HLFS's
//!   segment size), each hsynced and closed before the next is created;
//! - `hsync_4k`: `--count-4k` appends of 4 KiB, each followed by an hsync
//!   (a guest that flushes after every write);
//! - `hsync_4k_every64`: `--count-4k-batched` appends of 4 KiB, an hsync after
//!   every 64 (qemu-img bench `--flush-interval=64`), and one at the end.
//!
//! Write times run from the create call to the end of close, so they include
//! the final hsync and the pipeline's close, as the volume's numbers include
//! its flush. The client is set up as the engine's backend sets up its own
//! (`engine/src/backend/hdfs.rs`): a tokio runtime of 2 worker threads as
//! the client's I/O runtime, and every call made with `block_on` from the
//! calling thread, one at a time. Prints one JSON object on stdout.

use bytes::Bytes;
use hdfs_native::{ClientBuilder, WriteOptions};
use std::time::Instant;

struct Args {
    url: String,
    dir: String,
    mib: usize,
    count_4k: usize,
    count_4k_batched: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: hdfs_ceiling --url hdfs://HOST:PORT [--dir /path] [--mib N] [--count-4k N] [--count-4k-batched N]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        dir: "/bench/ceiling".into(),
        mib: 512,
        count_4k: 1024,
        count_4k_batched: 16384,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--url" => a.url = v,
            "--dir" => a.dir = v,
            "--mib" => a.mib = v.parse().unwrap_or_else(|_| usage()),
            "--count-4k" => a.count_4k = v.parse().unwrap_or_else(|_| usage()),
            "--count-4k-batched" => a.count_4k_batched = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if a.url.is_empty() || a.mib == 0 || a.count_4k == 0 || a.count_4k_batched == 0 {
        usage()
    }
    a
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("hdfs_ceiling: {what}: {e}");
    std::process::exit(1)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail("tokio runtime", e));
    let client = ClientBuilder::new()
        .with_url(a.url.clone())
        .with_io_runtime(rt.handle().clone())
        .build()
        .unwrap_or_else(|e| fail(&format!("client for {}", a.url), e));
    let _ = rt.block_on(client.delete(&a.dir, true));

    // Writes `total` bytes to `path` in `chunk`-byte appends, an hsync after
    // every `sync_every` appends (0: only at the end), then closes it.
    // Returns seconds from create to closed.
    let write = |path: &str, total: usize, chunk: usize, sync_every: usize| -> f64 {
        let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
        let t0 = Instant::now();
        let opts = WriteOptions::default().overwrite(false).create_parent(true);
        let mut w = rt
            .block_on(client.create(path, opts))
            .unwrap_or_else(|e| fail(&format!("create {path}"), e));
        let n = total / chunk;
        for i in 1..=n {
            rt.block_on(w.write_bytes(Bytes::copy_from_slice(&data)))
                .unwrap_or_else(|e| fail(&format!("append to {path}"), e));
            if sync_every > 0 && i % sync_every == 0 {
                rt.block_on(w.hsync())
                    .unwrap_or_else(|e| fail(&format!("hsync {path}"), e));
            }
        }
        if sync_every == 0 || n % sync_every != 0 {
            rt.block_on(w.hsync())
                .unwrap_or_else(|e| fail(&format!("hsync {path}"), e));
        }
        rt.block_on(w.close())
            .unwrap_or_else(|e| fail(&format!("close {path}"), e));
        t0.elapsed().as_secs_f64()
    };
    // Reads `path` sequentially in `chunk`-byte reads; checks the pattern
    // of the first byte of each read. Returns seconds from open to the end.
    let read = |path: &str, chunk: usize| -> f64 {
        let t0 = Instant::now();
        let r = rt
            .block_on(client.read(path))
            .unwrap_or_else(|e| fail(&format!("open {path}"), e));
        let len = r.file_length();
        let mut buf = vec![0u8; chunk];
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            rt.block_on(r.read_range_buf(&mut buf[..n], off))
                .unwrap_or_else(|e| fail(&format!("read {path} at {off}"), e));
            if buf[0] != 0 {
                fail(&format!("read {path} at {off}"), "wrong data");
            }
            off += n;
        }
        t0.elapsed().as_secs_f64()
    };
    // (replication, block size) of a file, as the NameNode reports them.
    let layout = |path: &str| -> (u32, u64) {
        rt.block_on(client.get_file_info(path))
            .map(|s| (s.replication.unwrap_or(0), s.blocksize.unwrap_or(0)))
            .unwrap_or((0, 0))
    };

    let mib = 1usize << 20;
    let total = a.mib * mib;
    let mut out = Vec::new();
    let mut repl = (0, 0);
    for (key, chunk) in [("seq_1m", mib), ("seq_64k", 64 << 10)] {
        let path = format!("{}/{key}", a.dir);
        let w = write(&path, total, chunk, 0);
        repl = layout(&path);
        let r = read(&path, chunk);
        out.push(format!(
            "\"{key}\": {{\"chunk\": {chunk}, \"bytes\": {total}, \"write_s\": {w:.6}, \"read_s\": {r:.6}, \
             \"write_mib_s\": {:.3}, \"read_mib_s\": {:.3}}}",
            a.mib as f64 / w,
            a.mib as f64 / r
        ));
        if key == "seq_1m" {
            // One-at-a-time 4 KiB reads at scattered 4 KiB offsets of the same
            // file: what one request to a DataNode costs.
            let r = rt
                .block_on(client.read(&path))
                .unwrap_or_else(|e| fail(&format!("open {path}"), e));
            let blocks = (total / 4096) as u64;
            let mut buf = [0u8; 4096];
            let t0 = Instant::now();
            for i in 0..a.count_4k as u64 {
                let off = (i * 65521 % blocks) as usize * 4096;
                rt.block_on(r.read_range_buf(&mut buf, off))
                    .unwrap_or_else(|e| fail(&format!("read {path} at {off}"), e));
            }
            let t = t0.elapsed().as_secs_f64();
            out.push(format!(
                "\"read_4k_scattered\": {{\"reads\": {}, \"read_s\": {t:.6}, \"ops_s\": {:.3}}}",
                a.count_4k,
                a.count_4k as f64 / t
            ));
        }
        let _ = rt.block_on(client.delete(&path, false));
    }
    // The 1 MiB appends again, but into files of 64 MiB, each closed before
    // the next is created: what HLFS's 64 MiB segments cost on top.
    {
        let seg = 64 * mib;
        let t0 = Instant::now();
        let mut left = total;
        let mut i = 0;
        while left > 0 {
            let n = left.min(seg);
            write(&format!("{}/seg-{i}", a.dir), n, mib, 0);
            left -= n;
            i += 1;
        }
        let w = t0.elapsed().as_secs_f64();
        out.push(format!(
            "\"seq_1m_64m_files\": {{\"files\": {i}, \"bytes\": {total}, \"write_s\": {w:.6}, \"write_mib_s\": {:.3}}}",
            a.mib as f64 / w
        ));
        for j in 0..i {
            let _ = rt.block_on(client.delete(&format!("{}/seg-{j}", a.dir), false));
        }
    }
    for (key, every, count) in [
        ("hsync_4k", 1usize, a.count_4k),
        ("hsync_4k_every64", 64, a.count_4k_batched),
    ] {
        let path = format!("{}/{key}", a.dir);
        let w = write(&path, count * 4096, 4096, every);
        out.push(format!(
            "\"{key}\": {{\"writes\": {count}, \"sync_every\": {every}, \"write_s\": {w:.6}, \"ops_s\": {:.3}}}",
            count as f64 / w
        ));
        let _ = rt.block_on(client.delete(&path, false));
    }
    let _ = rt.block_on(client.delete(&a.dir, true));
    println!(
        "{{\"replication\": {}, \"block_size\": {}, {}}}",
        repl.0,
        repl.1,
        out.join(", ")
    );
}
