//! Volume operations against a model: a sequence of writes, zeroes,
//! discards, reads, flushes, snapshots, reverts, snapshot deletes, clones,
//! grows and reopens runs on a memory-backend volume, and every read (of the
//! head, of `vol%snap` views and of clones) must equal a `Vec<u8>` model.
#![no_main]

use arbitrary::Arbitrary;
use hlfs::backend::mem::{registry_put, MemBackend};
use hlfs::{clone_volume, delete_volume, ErrorKind, OpenOptions, Volume};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const SECTOR: u64 = 512;
const START_SIZE: u64 = 256 << 10;
const URI: &str = "mem://fuzz-ops/vols/vol";
const CLONE_URI: &str = "mem://fuzz-ops/vols/clone";

#[derive(Arbitrary, Debug)]
enum Op {
    Write { sector: u16, sectors: u8, fill: u8 },
    Zero { sector: u16, sectors: u16 },
    Discard { sector: u16, sectors: u16 },
    Read { sector: u16, sectors: u8 },
    Flush,
    Snapshot(u8),
    DeleteSnapshot(u8),
    Revert(u8),
    ReadSnapshot(u8),
    Clone(u8),
    Grow(u8),
    Reopen,
}

#[derive(Clone)]
struct Snap {
    data: Vec<u8>,
}

fn index_root() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir")
    })
    .path()
}

fn opts() -> OpenOptions {
    OpenOptions {
        index_root: Some(index_root().join("index")),
        segment_size: 64 << 10,
        checkpoint_every: 96 << 10,
        ..Default::default()
    }
}

fn name(n: u8) -> String {
    format!("s{}", n % 4)
}

/// Clamps a sector range to the volume: (offset, len) in bytes, len > 0.
fn range(size: u64, sector: u64, sectors: u64) -> (u64, u64) {
    let total = size / SECTOR;
    let first = sector % total;
    let n = sectors.clamp(1, total - first);
    (first * SECTOR, n * SECTOR)
}

fn read_all(v: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; v.size() as usize];
    v.read(0, &mut buf).expect("read whole volume");
    buf
}

fuzz_target!(|ops: Vec<Op>| {
    let _ = std::fs::remove_dir_all(index_root().join("index"));
    registry_put("fuzz-ops", MemBackend::new());
    Volume::create(URI, START_SIZE).expect("create");
    let mut vol = Some(Volume::open(URI, &opts()).expect("open"));
    let mut head = vec![0u8; START_SIZE as usize];
    let mut snaps: BTreeMap<String, Snap> = BTreeMap::new();

    for op in ops.into_iter().take(64) {
        let v = vol.as_ref().expect("open volume");
        let size = head.len() as u64;
        match op {
            Op::Write { sector, sectors, fill } => {
                let (off, len) = range(size, sector.into(), u64::from(sectors).min(64));
                let data: Vec<u8> = (0..len).map(|i| fill ^ (i as u8) ^ ((i >> 9) as u8)).collect();
                v.write(off, &data).expect("write");
                head[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Zero { sector, sectors } | Op::Discard { sector, sectors } => {
                let (off, len) = range(size, sector.into(), sectors.into());
                if matches!(op, Op::Zero { .. }) {
                    v.write_zeroes(off, len).expect("write_zeroes");
                } else {
                    v.discard(off, len).expect("discard");
                }
                head[off as usize..(off + len) as usize].fill(0);
            }
            Op::Read { sector, sectors } => {
                let (off, len) = range(size, sector.into(), sectors.into());
                let mut buf = vec![0xa5u8; len as usize];
                v.read(off, &mut buf).expect("read");
                assert!(buf == head[off as usize..(off + len) as usize], "read at {off}+{len} differs from the model");
            }
            Op::Flush => v.flush().expect("flush"),
            Op::Snapshot(n) => {
                let r = v.snapshot_create(&name(n));
                if snaps.contains_key(&name(n)) {
                    assert_eq!(r.expect_err("duplicate snapshot").kind(), ErrorKind::Exists);
                } else {
                    r.expect("snapshot create");
                    snaps.insert(name(n), Snap { data: head.clone() });
                }
            }
            Op::DeleteSnapshot(n) => {
                let r = v.snapshot_delete(&name(n));
                if snaps.remove(&name(n)).is_some() {
                    r.expect("snapshot delete");
                } else {
                    assert_eq!(r.expect_err("missing snapshot").kind(), ErrorKind::NotFound);
                }
            }
            Op::Revert(n) => {
                let r = v.snapshot_revert(&name(n));
                match snaps.get(&name(n)) {
                    Some(s) => {
                        r.expect("revert");
                        head = s.data.clone();
                        assert_eq!(v.size(), head.len() as u64, "size after revert");
                    }
                    None => assert_eq!(r.expect_err("missing snapshot").kind(), ErrorKind::NotFound),
                }
            }
            Op::ReadSnapshot(n) => {
                if let Some(s) = snaps.get(&name(n)) {
                    let view = Volume::open(&format!("{URI}%{}", name(n)), &OpenOptions::read_only()).expect("open snapshot view");
                    assert!(read_all(&view) == s.data, "snapshot {} differs from the model", name(n));
                }
            }
            Op::Clone(n) => {
                if let Some(s) = snaps.get(&name(n)) {
                    clone_volume(&format!("{URI}%{}", name(n)), CLONE_URI, None).expect("clone");
                    {
                        let c = Volume::open(CLONE_URI, &opts()).expect("open clone");
                        assert!(read_all(&c) == s.data, "clone of {} differs from the model", name(n));
                        c.write(0, &[0x5a; 4096]).expect("write clone");
                        c.close().expect("close clone");
                    }
                    let r = v.snapshot_delete(&name(n));
                    assert_eq!(r.expect_err("snapshot with a clone").kind(), ErrorKind::InUse);
                    delete_volume(CLONE_URI).expect("delete clone");
                }
            }
            Op::Grow(n) => {
                let new = size + u64::from(n % 16) * (64 << 10) + SECTOR;
                v.resize(new).expect("grow");
                head.resize(new as usize, 0);
            }
            Op::Reopen => {
                vol.take().expect("volume").close().expect("close");
                vol = Some(Volume::open(URI, &opts()).expect("reopen"));
            }
        }
    }
    let v = vol.take().expect("volume");
    assert!(read_all(&v) == head, "head differs from the model at the end");
    v.close().expect("close");
    let report = hlfs::fsck(URI, false).expect("fsck");
    assert!(report.errors.is_empty(), "fsck: {:?}", report.errors);
});
