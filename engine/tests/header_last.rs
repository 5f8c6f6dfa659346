//! A full segment is synced in the background (local) or at the next flush
//! (the memory backend), while appends go on into the next segment, whose
//! header (naming its predecessor and vouching for its length) is written
//! last, once every earlier segment is durable. These tests look at the
//! files: which headers are out before a flush, that a crash in between
//! leaves a log that opens with every acknowledged write, and that the
//! headerless leftovers are removed by the next writer.

mod common;

use common::{mix, pattern, read_all, Kind, Place};
use hlfs::backend::mem::{registry_put, registry_remove, MemBackend};
use hlfs::{log, OpenOptions, Volume};

const SEG: u64 = 64 << 10;
const SIZE: usize = 1 << 20;

fn opts(place: &Place) -> OpenOptions {
    OpenOptions {
        segment_size: SEG,
        checkpoint_every: 64 << 20, // no checkpoint in the way
        ..place.opts()
    }
}

fn uuid_of(place: &Place, name: &str) -> [u8; 16] {
    let b = place.backend();
    let dir = place.path(name);
    let first = log::list_segments(&*b, &dir).unwrap()[0];
    log::segment_header(&*b, &dir, first).unwrap().expect("first header").2
}

/// Segments of volume `name`, each with whether its header is out.
fn headers(place: &Place, name: &str) -> Vec<(u64, bool)> {
    let b = place.backend();
    let dir = place.path(name);
    log::list_segments(&*b, &dir)
        .unwrap()
        .into_iter()
        .map(|s| (s, log::segment_header(&*b, &dir, s).unwrap().is_some()))
        .collect()
}

/// Writes 4 KiB blocks `from..to` of pattern `seed` into `buf` and `v`.
fn fill(v: &Volume, buf: &mut [u8], seed: u64, from: usize, to: usize) {
    for i in from..to {
        let b = pattern(mix(seed ^ i as u64), 4096);
        v.write((i * 4096) as u64, &b).unwrap();
        buf[i * 4096..(i + 1) * 4096].copy_from_slice(&b);
    }
}

#[test]
fn headers_wait_for_their_predecessors_and_a_flush_writes_them_all() {
    let place = Place::new(Kind::Mem);
    let uri = place.uri("vol");
    Volume::create(&uri, SIZE as u64).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let mut want = vec![0u8; SIZE];
    // About six segments' worth, no flush.
    fill(&v, &mut want, 1, 0, 96);
    let h = headers(&place, "vol");
    let held: Vec<u64> = h.iter().filter(|(_, out)| !out).map(|(s, _)| *s).collect();
    assert!(
        held.len() >= 4,
        "segments opened after a full one that is not yet durable hold their header back: {h:?}"
    );
    // Headerless segments are the newest ones: the chain ends before them.
    let first_held = held[0];
    assert!(held.iter().all(|&s| s >= first_held));
    assert!(h.iter().filter(|(s, _)| *s > first_held).all(|(_, out)| !out), "{h:?}");
    let l = log::layout(&*place.backend(), &place.path("vol"), &uuid_of(&place, "vol"), 0).unwrap();
    assert!(l.chain.iter().all(|(s, _)| *s < first_held), "{l:?}");
    // A reader opening now gets a consistent (older) view, no error.
    let ro = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    drop(ro);

    v.flush().unwrap();
    let h = headers(&place, "vol");
    assert!(h.iter().all(|(_, out)| *out), "after a flush every header is out: {h:?}");
    let ro = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    assert!(read_all(&ro) == want, "a reader after the flush sees every write");
    drop(ro);
    v.close().unwrap();
    let rep = hlfs::fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// A crash while full segments wait for their sync: every flushed write
/// survives, each unflushed block reads as before or after its write, the
/// volume opens, and the next writer removes the headerless segments.
#[test]
fn crash_with_segments_waiting_loses_nothing_acknowledged() {
    let mut checked = 0;
    for seed in 0..40u64 {
        let place = Place::new(Kind::Mem);
        let mem = place.mem.clone().unwrap();
        let uri = place.uri("vol");
        Volume::create(&uri, SIZE as u64).unwrap();
        let v = Volume::open(&uri, &opts(&place)).unwrap();
        let mut durable = vec![0u8; SIZE];
        fill(&v, &mut durable, seed, 0, 40);
        v.flush().unwrap();
        let mut after = durable.clone();
        // Overwrite and extend over several segments, unflushed.
        let n = 60 + (seed as usize % 5) * 20;
        fill(&v, &mut after, seed ^ 0xabc, 20, n.min(SIZE / 4096));
        let held = headers(&place, "vol").iter().filter(|(_, out)| !out).count();
        assert!(held > 0, "seed {seed}: some header is held back at the crash");
        mem.crash_now();
        drop(v);

        // Several outcomes of the same crash.
        for r in 0..4u64 {
            let copy: MemBackend = mem.deep_copy();
            copy.recover(mix(seed * 7 + r));
            let name = format!("hl{}-{seed}-{r}", std::process::id());
            registry_put(&name, copy.clone());
            let u = format!("mem://{name}/vols/vol");
            let v = Volume::open(&u, &opts(&place))
                .unwrap_or_else(|e| panic!("seed {seed}/{r}: does not open after the crash: {e}"));
            let got = read_all(&v);
            for i in 0..SIZE / 4096 {
                let b = &got[i * 4096..(i + 1) * 4096];
                assert!(
                    b == &durable[i * 4096..(i + 1) * 4096] || b == &after[i * 4096..(i + 1) * 4096],
                    "seed {seed}/{r}: block {i} is neither its flushed nor its later contents"
                );
            }
            // The writer removed what lay past the end of the log.
            let b = hlfs::backend::for_uri(&hlfs::VolumeUri::parse(&u).unwrap()).unwrap();
            let dir = "/vols/vol";
            let uuid = log::segment_header(&*b, dir, log::list_segments(&*b, dir).unwrap()[0])
                .unwrap()
                .unwrap()
                .2;
            let l = log::layout(&*b, dir, &uuid, 0).unwrap();
            let tail = l.chain.last().unwrap().0;
            assert!(
                l.abandoned.iter().all(|&s| s < tail),
                "seed {seed}/{r}: headerless segments past the end are removed: {l:?}"
            );
            v.close().unwrap();
            let rep = hlfs::fsck(&u, false).unwrap();
            assert!(rep.errors.is_empty(), "seed {seed}/{r}: {:?}", rep.errors);
            registry_remove(&name);
            checked += 1;
        }
    }
    assert_eq!(checked, 160);
}

/// On local files the full segments are synced by threads of their own;
/// many rolls, a flush, a reopen: every header is out and the log whole.
#[test]
fn local_segments_close_in_the_background() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("vol");
    Volume::create(&uri, SIZE as u64 * 4).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let mut want = vec![0u8; SIZE * 4];
    for round in 0..3u64 {
        fill(&v, &mut want, round, 0, SIZE * 4 / 4096);
        // A reader in between sees a consistent log.
        let ro = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
        drop(ro);
    }
    v.flush().unwrap();
    let h = headers(&place, "vol");
    assert!(h.len() > 3 * 16, "{} segments", h.len());
    assert!(h.iter().all(|(_, out)| *out), "after a flush every header is out: {h:?}");
    v.close().unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    assert!(read_all(&v) == want);
    v.close().unwrap();
    let rep = hlfs::fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}
