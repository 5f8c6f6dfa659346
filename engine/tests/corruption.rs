//! Damage on disk: a flipped byte in a segment, a checkpoint or the sled
//! index. Properties: a read returns the written bytes or fails with
//! `Corrupt` naming the volume, the segment and the offset, never other
//! bytes; `fsck` reports the damage; `fsck --rebuild-index` recovers every
//! block the log still holds intact; a damaged checkpoint or index costs
//! only time (the log is replayed), never data.

use hlfs::{fsck, ErrorKind, OpenOptions, Volume};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const BS: usize = 4096;
const BLOCKS: u64 = 96;

fn pattern(block: u64, gen: u8) -> Vec<u8> {
    (0..BS).map(|i| (block as u8).wrapping_mul(31) ^ gen ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8).collect()
}

/// A closed volume with data in several segments, a snapshot, a checkpoint
/// and data after the checkpoint. Returns (dir, uri, expected head).
fn make(root: &Path, name: &str) -> (PathBuf, String, Vec<Vec<u8>>) {
    let dir = root.join(name);
    let uri = format!("local://{}", dir.display());
    Volume::create(&uri, BLOCKS * BS as u64).unwrap();
    let opts = OpenOptions { segment_size: 128 << 10, checkpoint_every: 160 << 10, ..Default::default() };
    let v = Volume::open(&uri, &opts).unwrap();
    let mut head = vec![vec![0u8; BS]; BLOCKS as usize];
    for gen in 1..=3u8 {
        for b in (0..BLOCKS).filter(|b| (b + gen as u64) % 3 != 0) {
            let d = pattern(b, gen);
            v.write(b * BS as u64, &d).unwrap();
            head[b as usize] = d;
        }
        if gen == 2 {
            v.snapshot_create("s2").unwrap();
        }
        v.flush().unwrap();
    }
    v.close().unwrap();
    (dir, uri, head)
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, off: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[off as usize] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

/// Reads every block of `uri` with a fresh opener; each read must be the
/// expected bytes or a `Corrupt` error naming volume, segment and offset.
/// Returns how many blocks failed.
fn check_reads(uri: &str, opts: &OpenOptions, head: &[Vec<u8>], dir: &Path) -> Result<usize, hlfs::Error> {
    let v = Volume::open(uri, opts)?;
    let mut bad = 0;
    for (b, want) in head.iter().enumerate() {
        let mut buf = vec![0u8; BS];
        match v.read(b as u64 * BS as u64, &mut buf) {
            Ok(()) => assert!(buf == *want, "block {b} of {uri} read back different bytes"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "block {b}: {e}");
                let m = e.to_string();
                assert!(m.contains(&dir.display().to_string()) || m.contains(uri), "no volume in {m:?}");
                // The damaged file: a segment, or the checkpoint a
                // read-only opener searches in place.
                assert!(m.contains("seg-") || m.contains("ckpt-"), "no segment or checkpoint in {m:?}");
                assert!(m.contains("offset") || m.contains("byte"), "no offset in {m:?}");
                bad += 1;
            }
        }
    }
    if !opts.read_only {
        v.close()?;
    }
    Ok(bad)
}

#[test]
fn flipped_segment_bytes_never_read_back_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e6);
    let (dir, uri, head) = make(tmp.path(), "v");
    let segs = files(&dir, "seg-");
    assert!(segs.len() >= 3, "want several segments, got {segs:?}");
    let (mut detected, mut open_refused, mut rounds) = (0, 0, 0);
    for round in 0..40 {
        let seg = &segs[round % segs.len()];
        let len = std::fs::metadata(seg).unwrap().len();
        let off = rng.gen_range(0..len);
        flip(seg, off);
        rounds += 1;
        // Read-only openers and a read-write opener with its index intact.
        for opts in [OpenOptions::read_only(), OpenOptions::default()] {
            match check_reads(&uri, &opts, &head, &dir) {
                Ok(n) => detected += usize::from(n > 0),
                Err(e) => {
                    // A damaged metadata record stops the replay: the
                    // error must still say where.
                    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                    assert!(e.to_string().contains("seg-"), "{e}");
                    open_refused += 1;
                }
            }
        }
        let rep = fsck(&uri, false).unwrap();
        assert!(!rep.errors.is_empty(), "fsck missed a flip at {}:{off}", seg.display());
        assert!(rep.errors.iter().any(|m| m.contains("seg-")), "{:?}", rep.errors);
        flip(seg, off);
    }
    assert_eq!(rounds, 40);
    assert!(detected + open_refused > 0);
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(check_reads(&uri, &OpenOptions::default(), &head, &dir).unwrap(), 0);
}

#[test]
fn rebuild_index_recovers_every_intact_block() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, uri, head) = make(tmp.path(), "v");
    // Damage one data block in the middle of the log: find it by content.
    let victim = pattern(40, 3);
    let (seg, off) = files(&dir, "seg-")
        .into_iter()
        .find_map(|s| {
            let b = std::fs::read(&s).unwrap();
            b.windows(BS).position(|w| w == victim.as_slice()).map(|o| (s, o as u64))
        })
        .expect("block 40 in the log");
    flip(&seg, off + 100);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let rep = fsck(&uri, true).unwrap();
    assert!(!rep.errors.is_empty());
    let bad = check_reads(&uri, &OpenOptions::default(), &head, &dir).unwrap();
    assert_eq!(bad, 1, "only the damaged block may fail");
    // The snapshot still reads block 40: its copy there (written by
    // generation 1; generation 2 skipped it) is intact.
    let snap = Volume::open(&format!("{uri}%s2"), &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; BS];
    snap.read(40 * BS as u64, &mut buf).unwrap();
    assert!(buf == pattern(40, 1), "snapshot s2 block 40");
}

#[test]
fn damaged_checkpoints_cost_time_not_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, uri, head) = make(tmp.path(), "v");
    let ckpts = files(&dir, "ckpt-");
    assert!(!ckpts.is_empty(), "the volume wrote no checkpoint");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4e);
    for round in 0..24 {
        let c = &ckpts[round % ckpts.len()];
        let off = rng.gen_range(0..std::fs::metadata(c).unwrap().len());
        flip(c, off);
        // A read-only opener searches the newest checkpoint in place: it
        // must fall back or fail with Corrupt, never read wrong bytes.
        match check_reads(&uri, &OpenOptions::read_only(), &head, &dir) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
        }
        // A writer that has lost its index loads a checkpoint: a damaged
        // one is skipped and the log replayed, so every block reads back.
        std::fs::remove_dir_all(dir.join("index")).unwrap();
        assert_eq!(check_reads(&uri, &OpenOptions::default(), &head, &dir).unwrap(), 0, "round {round}");
        let rep = fsck(&uri, false).unwrap();
        assert!(!rep.errors.is_empty() || !rep.notes.is_empty(), "fsck said nothing about a damaged checkpoint");
        flip(c, off);
    }
}

#[test]
fn damaged_index_is_detected_or_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, uri, head) = make(tmp.path(), "v");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1de);
    let mut db_files = Vec::new();
    let mut todo = vec![dir.join("index")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { todo.push(p) } else if std::fs::metadata(&p).unwrap().len() > 0 { db_files.push(p) }
        }
    }
    assert!(!db_files.is_empty());
    for round in 0..16 {
        let f = &db_files[round % db_files.len()];
        let off = rng.gen_range(0..std::fs::metadata(f).unwrap().len());
        let saved = std::fs::read(f).unwrap();
        flip(f, off);
        match check_reads(&uri, &OpenOptions::default(), &head, &dir) {
            Ok(_) => {}
            Err(e) => {
                // The error must say how to get out.
                assert!(e.to_string().contains("rebuild-index") || e.to_string().contains("index"), "{e}");
                let rep = fsck(&uri, true).unwrap();
                assert!(rep.errors.is_empty(), "{:?}", rep.errors);
                assert_eq!(check_reads(&uri, &OpenOptions::default(), &head, &dir).unwrap(), 0);
            }
        }
        if std::fs::metadata(f).is_ok() {
            std::fs::write(f, saved).unwrap();
        }
    }
}

#[test]
fn a_garbled_index_is_rebuilt_on_open() {
    // Property: the sled index is only a cache; when sled itself reports
    // it damaged (a crash or a full disk interrupted it), a read-write open
    // rebuilds it from the checkpoints and the log, and every block reads back.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, uri, head) = make(tmp.path(), "v");
    let db = dir.join("index").join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xdb);
    std::fs::write(&db, (0..len.max(4096)).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(check_reads(&uri, &OpenOptions::default(), &head, &dir).unwrap(), 0);
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// Chunks of an O_DIRECT segment are written several at a time, so a crash
/// can leave a later one on disk and an earlier one not: a gap of zeros
/// (never written), then valid records. That is a torn tail (nothing past
/// the gap was flushed), so fsck notes it; a gap of garbage before valid
/// records is damage, and fsck reports an error.
#[test]
fn a_never_written_gap_before_valid_records_is_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    for (name, gap_byte, is_error) in [("zeros", 0u8, false), ("garbage", 0x77u8, true)] {
        let (dir, uri, _) = make(root.path(), name);
        assert!(fsck(&uri, false).unwrap().errors.is_empty());
        let last = files(&dir, "seg-").pop().unwrap();
        let mut b = std::fs::read(&last).unwrap();
        // The segment's first record (its header), copied past the gap.
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        let first = b[..hlfs::format::RECORD_HEADER_LEN + len].to_vec();
        b.extend(std::iter::repeat(gap_byte).take(3 * BS));
        b.extend_from_slice(&first);
        std::fs::write(&last, b).unwrap();
        let rep = fsck(&uri, false).unwrap();
        if is_error {
            assert!(rep.errors.iter().any(|e| e.contains("followed by valid records")), "{rep:?}");
        } else {
            assert!(rep.errors.is_empty(), "{:?}", rep.errors);
            assert!(rep.notes.iter().any(|n| n.contains("a gap never written")), "{:?}", rep.notes);
        }
    }
}
