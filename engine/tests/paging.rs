//! The block map under a memory budget (`OpenOptions::map_memory`): past
//! it, pages of the map live in sled only and are read back when needed
//! (design.md §3).
//!
//! `a_tiny_budget_changes_nothing_but_memory`: random writes, discards,
//! snapshots, snapshot deletes (which fold timelines) and reverts on a
//! 1 GiB volume (16 pages per timeline) whose map may use 4 KiB (about 40
//! extents),
//! against a model of the head and of every snapshot. After every step the
//! map in memory holds at most the budget; reads equal the model; after a
//! clean close and reopen (which loads only part of the index), and after
//! a reopen with the index deleted (a rebuild from the log), they still do,
//! and fsck is clean.

mod common;

use common::{pattern, Kind, Place};
use hlfs::{OpenOptions, Volume};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const BS: u64 = 4096;
const SIZE: u64 = 1 << 30;
/// Bytes the map may use: about 40 single-block extents.
const BUDGET: u64 = 4096;
const STEPS: u64 = 600;

/// Sparse model: block -> contents (absent: zeros).
type Model = BTreeMap<u64, Vec<u8>>;

fn check(v: &Volume, m: &Model, probes: &[u64], what: &str) {
    let mut buf = vec![0u8; BS as usize];
    for &b in probes {
        v.read(b * BS, &mut buf).unwrap();
        let want = m.get(&b).cloned().unwrap_or_else(|| vec![0; BS as usize]);
        assert!(buf == want, "{what}: block {b} differs");
    }
}

/// What the map in memory costs, and the pages kept in sled only.
fn resident(v: &Volume) -> (u64, u64) {
    let i = v.info().unwrap();
    (i.map_bytes, i.map_pages_out)
}

#[test]
fn a_tiny_budget_changes_nothing_but_memory() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("paged");
    let opts = OpenOptions {
        segment_size: 4 << 20,
        map_memory: BUDGET,
        ..place.opts()
    };
    Volume::create(&uri, SIZE).unwrap();
    let mut v = Volume::open(&uri, &opts).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let blocks = SIZE / BS;
    let mut head = Model::new();
    let mut snaps: BTreeMap<String, Model> = BTreeMap::new();
    let mut touched: Vec<u64> = Vec::new();
    let (mut peak, mut most_out) = (0, 0);
    for step in 0..STEPS {
        match rng.gen_range(0..100) {
            0..=69 => {
                // 1–8 blocks anywhere: many pages, many extents.
                let n = rng.gen_range(1..=8u64);
                let b = rng.gen_range(0..blocks - n);
                let data = pattern(step * 131 + b, (n * BS) as usize);
                v.write(b * BS, &data).unwrap();
                for i in 0..n {
                    head.insert(b + i, data[(i * BS) as usize..((i + 1) * BS) as usize].to_vec());
                    touched.push(b + i);
                }
            }
            70..=79 => {
                let n = rng.gen_range(1..=64u64);
                let b = rng.gen_range(0..blocks - n);
                v.discard(b * BS, n * BS).unwrap();
                for i in 0..n {
                    head.remove(&(b + i));
                }
                touched.push(b);
            }
            80..=87 => {
                let name = format!("s{step}");
                v.snapshot_create(&name).unwrap();
                snaps.insert(name, head.clone());
            }
            88..=93 if !snaps.is_empty() => {
                let i = rng.gen_range(0..snaps.len());
                let name = snaps.keys().nth(i).unwrap().clone();
                v.snapshot_delete(&name).unwrap();
                snaps.remove(&name);
            }
            94..=96 if !snaps.is_empty() => {
                let i = rng.gen_range(0..snaps.len());
                let name = snaps.keys().nth(i).unwrap().clone();
                v.snapshot_revert(&name).unwrap();
                head = snaps[&name].clone();
            }
            97..=99 => v.flush().unwrap(),
            _ => {}
        }
        let (bytes, out) = resident(&v);
        (peak, most_out) = (peak.max(bytes), most_out.max(out));
        assert!(bytes <= BUDGET, "step {step}: the map costs {bytes} bytes, budget {BUDGET}");
        if step % 50 == 49 {
            let probes: Vec<u64> = (0..64).map(|_| touched[rng.gen_range(0..touched.len())]).collect();
            check(&v, &head, &probes, &format!("step {step}"));
        }
    }
    eprintln!(
        "map peak {peak} bytes (budget {BUDGET}), up to {most_out} pages in sled only, {} blocks touched",
        touched.len()
    );
    assert!(most_out >= 8, "the budget should have sent pages out: {most_out}");
    touched.sort_unstable();
    touched.dedup();
    check(&v, &head, &touched, "at the end");
    // Every snapshot view reads what it did when taken.
    for (name, m) in &snaps {
        let s = Volume::open(&format!("{uri}%{name}"), &OpenOptions::read_only()).unwrap();
        check(&s, m, &touched, &format!("snapshot {name}"));
    }
    // A clean close; the reopen loads the index up to the budget only.
    v.close().unwrap();
    v = Volume::open(&uri, &opts).unwrap();
    assert!(resident(&v).0 <= BUDGET && resident(&v).1 > 0);
    check(&v, &head, &touched, "after a clean reopen");
    v.close().unwrap();
    // No index: rebuilt from the checkpoints and the log, under the budget.
    std::fs::remove_dir_all(std::path::Path::new(&place.path("paged")).join("index")).unwrap();
    v = Volume::open(&uri, &opts).unwrap();
    check(&v, &head, &touched, "after a rebuild");
    v.close().unwrap();
    assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty());
}
