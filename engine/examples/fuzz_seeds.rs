//! Writes seed inputs for the cargo-fuzz targets in `engine/fuzz` from a
//! real volume: segments, a checkpoint, encoded values, names.
//!
//!     cargo run -p hlfs --example fuzz_seeds -- engine/fuzz/corpus
//!
//! Each seed starts with the targets' flag byte (bit 0: repair checksums).

use hlfs::backend::mem::{registry_put, MemBackend};
use hlfs::backend::Backend;
use hlfs::{OpenOptions, Volume};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds CORPUS_DIR")?;
    let out = Path::new(&out);
    let mem = MemBackend::new();
    registry_put("seeds", mem.clone());
    let index = tempfile::tempdir()?;
    let uri = "mem://seeds/v/vol";
    Volume::create(uri, 1 << 20)?;
    let opts = OpenOptions {
        index_root: Some(index.path().to_path_buf()),
        segment_size: 64 << 10,
        checkpoint_every: 32 << 10,
        ..Default::default()
    };
    let v = Volume::open(uri, &opts)?;
    for i in 0..12u64 {
        v.write(i * 8192, &vec![i as u8 + 1; 4096])?;
    }
    v.write_zeroes(65536, 16384)?;
    v.snapshot_create("snap1")?;
    v.write(4096, &[7u8; 512])?;
    v.resize(2 << 20)?;
    v.snapshot_create("snap2")?;
    v.snapshot_revert("snap1")?;
    v.snapshot_delete("snap2")?;
    v.flush()?;
    v.close()?;

    let put = |target: &str, name: &str, flags: Option<u8>, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        let mut b = Vec::new();
        b.extend(flags);
        b.extend_from_slice(bytes);
        std::fs::write(dir.join(name), b)
    };
    let mut n_seg = 0;
    let mut n_ckpt = 0;
    for p in mem.paths() {
        let f = mem.open_read(&p)?;
        let mut b = vec![0u8; f.len()? as usize];
        f.read_exact_at(0, &mut b)?;
        let file = p.rsplit('/').next().unwrap_or("");
        if file.starts_with("seg-") {
            // Segments hold up to 64 KiB; the first 8 KiB keep the fuzzer fast.
            b.truncate(8192);
            put("record", &format!("{file}-0"), Some(0), &b)?;
            put("record", &format!("{file}-1"), Some(1), &b)?;
            n_seg += 1;
        } else if file.starts_with("ckpt-") && !file.ends_with(".tmp") {
            put("checkpoint", &format!("{file}-0"), Some(0), &b)?;
            put("checkpoint", &format!("{file}-1"), Some(1), &b)?;
            // The state alone, for the values target.
            let state_len = u32::from_le_bytes(b[48..52].try_into()?) as usize;
            put(
                "values",
                &format!("state-{file}"),
                None,
                &b[64..64 + state_len],
            )?;
            n_ckpt += 1;
        }
    }
    put(
        "values",
        "entry-data",
        None,
        &hlfs::index::Entry::Data {
            seg: 3,
            off: 4096,
            crc: 0xdead_beef,
        }
        .encode(),
    )?;
    put(
        "values",
        "entry-zero",
        None,
        &hlfs::index::Entry::Zero.encode(),
    )?;
    for (i, s) in [
        "local:///var/lib/hlfs/vm1",
        "hlfs:local:///tmp/testenv/testfs%snapshot1",
        "hdfs://namenode:8020/hlfs/vm1",
        "hlfs:hdfs:///vms/base%golden",
        "mem://t/v/vol",
        "10G",
        "512",
        "1.5M",
        "snapshot-1",
    ]
    .iter()
    .enumerate()
    {
        put("names", &format!("seed-{i}"), None, s.as_bytes())?;
    }
    for (i, ops) in [
        vec![0u8; 64],
        (0..=255u8).collect::<Vec<_>>(),
        b"fuzz the volume ops".repeat(8),
    ]
    .iter()
    .enumerate()
    {
        put("volume_ops", &format!("seed-{i}"), None, ops)?;
    }
    eprintln!(
        "{n_seg} segment seeds, {n_ckpt} checkpoint seeds in {}",
        out.display()
    );
    if n_ckpt == 0 {
        return Err("the seed volume wrote no checkpoint".into());
    }
    Ok(())
}
