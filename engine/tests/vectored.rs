//! `Volume::write_vectored` / `read_vectored` (QEMU's scatter-gather path,
//! `hlfs_pwritev`/`hlfs_preadv`). Property: random 512-aligned requests,
//! split into random pieces of any length (also empty ones), read and
//! write exactly what the same request through `write`/`read` would, on
//! a volume and on a clone reading through its base; reads also in pieces
//! of whole blocks (the path that reads straight into each piece).

mod common;

use common::{pattern, read_all, Kind, Place};
use hlfs::{clone_volume, Volume};
use rand::{Rng, SeedableRng};

const SIZE: u64 = 4 << 20;

/// Cuts `len` bytes into random piece lengths (some empty).
fn split(rng: &mut impl Rng, len: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(1..=left.min(700)),
            2 => rng.gen_range(1..=left.min(70_000)),
            _ => left,
        };
        out.push(n);
        left -= n;
    }
    out
}

fn check(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let req = |v: &Volume, model: &mut Vec<u8>, rng: &mut rand::rngs::StdRng, i: u64| {
        let sectors = SIZE / 512;
        let first = rng.gen_range(0..sectors);
        let n = rng.gen_range(1..=(sectors - first).min(2600)); // up to 1.3 MiB: several records
        let (off, len) = ((first * 512) as usize, (n * 512) as usize);
        let data = pattern(i, len);
        let pieces = split(rng, len);
        let mut parts = Vec::new();
        let mut at = 0;
        for p in &pieces {
            parts.push(&data[at..at + p]);
            at += p;
        }
        v.write_vectored(off as u64, &parts).unwrap();
        model[off..off + len].copy_from_slice(&data);
        // Read some range back through another split; half the time whole
        // blocks in pieces of whole blocks (as QEMU passes a guest's pages),
        // which are read straight into each piece.
        let blocks = rng.gen_bool(0.5);
        let (off, len, pieces) = if blocks {
            let first = rng.gen_range(0..SIZE / 4096);
            let n = rng.gen_range(1..=(SIZE / 4096 - first).min(320));
            let pieces: Vec<usize> = split(rng, n as usize).into_iter().map(|p| p * 4096).collect();
            ((first * 4096) as usize, (n * 4096) as usize, pieces)
        } else {
            let first = rng.gen_range(0..sectors);
            let n = rng.gen_range(1..=(sectors - first).min(2600));
            let (off, len) = ((first * 512) as usize, (n * 512) as usize);
            (off, len, split(rng, len))
        };
        let mut got = vec![0u8; len];
        {
            let mut bufs: Vec<&mut [u8]> = Vec::new();
            let mut rest = got.as_mut_slice();
            for p in &pieces {
                let (a, b) = rest.split_at_mut(*p);
                bufs.push(a);
                rest = b;
            }
            v.read_vectored(off as u64, &mut bufs).unwrap();
        }
        assert!(
            got == model[off..off + len],
            "{kind:?}: request {i}: read_vectored differs"
        );
    };
    for i in 0..150 {
        req(&v, &mut model, &mut rng, i);
    }
    v.snapshot_create("s").unwrap();
    v.close().unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    assert!(read_all(&v) == model, "{kind:?}: after reopening");
    v.close().unwrap();
    // A clone: reads fall through to the base, writes go to the clone.
    clone_volume(&format!("{uri}%s"), &place.uri("c"), None).unwrap();
    let c = Volume::open(&place.uri("c"), &place.opts()).unwrap();
    for i in 150..250 {
        req(&c, &mut model, &mut rng, i);
    }
    assert!(read_all(&c) == model, "{kind:?}: clone");
    c.close().unwrap();
}

#[test]
fn vectored_io_equals_contiguous_io() {
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        check(kind);
    }
}

#[test]
fn bad_vectored_requests_are_refused_whole() {
    let place = Place::new(Kind::Mem);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let a = [1u8; 300];
    let b = [2u8; 300];
    // 600 bytes: not a multiple of 512.
    assert!(v.write_vectored(0, &[&a, &b]).is_err());
    // Past the end.
    let big = vec![3u8; 8192];
    assert!(v.write_vectored(SIZE - 4096, &[&big]).is_err());
    assert!(
        read_all(&v).iter().all(|&x| x == 0),
        "a refused request changed the volume"
    );
    v.close().unwrap();
}

/// `try_write_vectored` (QEMU's inline write, `hlfs_try_pwritev`):
/// from several threads at once, mixed with blocking writes, every request
/// either completes or says "use the blocking path" having changed nothing,
/// so doing exactly that gives the same volume as a model, also after a
/// reopen; segment rolls and pushes happen on the blocking path. Requests
/// it must decline (unaligned, larger than one record, read-only) are
/// declined.
#[test]
fn inline_writes_complete_or_change_nothing() {
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        let place = Place::new(kind);
        let uri = place.uri("v");
        Volume::create(&uri, SIZE).unwrap();
        let mut opts = place.opts();
        opts.segment_size = 256 << 10; // many rolls
        let v = std::sync::Arc::new(Volume::open(&uri, &opts).unwrap());
        // Each thread owns a quarter of the volume, so the model is exact.
        let quarter = SIZE / 4;
        let inline = std::sync::atomic::AtomicU64::new(0);
        let models: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|t| {
                    let v = v.clone();
                    let inline = &inline;
                    s.spawn(move || {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + t);
                        let mut model = vec![0u8; quarter as usize];
                        for i in 0..600u64 {
                            let blocks = quarter / 4096;
                            let b = rng.gen_range(0..blocks);
                            let n = rng.gen_range(1..=(blocks - b).min(8));
                            let data = pattern(t * 10_000 + i, (n * 4096) as usize);
                            let (a, z) = data.split_at(rng.gen_range(0..=data.len()));
                            let off = t * quarter + b * 4096;
                            if v.try_write_vectored(off, &[a, z]).unwrap() {
                                inline.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            } else {
                                v.write_vectored(off, &[a, z]).unwrap();
                            }
                            model[(b * 4096) as usize..((b + n) * 4096) as usize]
                                .copy_from_slice(&data);
                            if i % 97 == 0 {
                                v.flush().unwrap();
                            }
                        }
                        model
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let model: Vec<u8> = models.concat();
        let inline = inline.into_inner();
        // Only shows that the inline path ran: how often it succeeds
        // depends on lock contention between the threads.
        assert!(
            inline > 24,
            "{kind:?}: only {inline} of 2400 writes completed inline"
        );
        assert!(read_all(&v) == model, "{kind:?}: after inline writes");
        // Declined: unaligned, more than one record, past the end.
        assert!(!v.try_write_vectored(512, &[&[1u8; 4096]]).unwrap());
        assert!(!v.try_write_vectored(0, &[&vec![1u8; 257 * 4096]]).unwrap());
        assert!(v.try_write_vectored(SIZE, &[&[1u8; 4096]]).is_err());
        assert!(
            read_all(&v) == model,
            "{kind:?}: declined writes changed nothing"
        );
        std::sync::Arc::into_inner(v).unwrap().close().unwrap();
        let v = Volume::open(&uri, &place.opts()).unwrap();
        assert!(read_all(&v) == model, "{kind:?}: after reopening");
        v.close().unwrap();
        let ro = Volume::open(&uri, &hlfs::OpenOptions::read_only()).unwrap();
        assert!(!ro.try_write_vectored(0, &[&[1u8; 4096]]).unwrap());
    }
}

/// `try_read_vectored` (QEMU's inline read, `hlfs_try_preadv`): from
/// several threads at once, beside writes, flushes and a map budget small
/// enough that pages go out to sled, every inline read that says it is done
/// returns what a model holds; one that declines is followed by the
/// blocking read, as QEMU does. Reads of the log's memory, of the page
/// cache and of holes complete inline; a page of the map that is out, a
/// busy lock or an O_DIRECT segment make it decline.
#[test]
fn inline_reads_return_the_model_or_decline() {
    for kind in [Kind::Local, Kind::Mem] {
        let place = Place::new(kind);
        let uri = place.uri("v");
        Volume::create(&uri, SIZE).unwrap();
        let mut opts = place.opts();
        opts.segment_size = 256 << 10;
        opts.map_memory = 64 << 10; // pages go out and come back
        let v = std::sync::Arc::new(Volume::open(&uri, &opts).unwrap());
        let quarter = SIZE / 4;
        let (inline, declined) = (std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (v, inline, declined) = (v.clone(), &inline, &declined);
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(300 + t);
                    let mut model = vec![0u8; quarter as usize];
                    let blocks = quarter / 4096;
                    for i in 0..800u64 {
                        let b = rng.gen_range(0..blocks);
                        let n = rng.gen_range(1..=(blocks - b).min(8));
                        let off = t * quarter + b * 4096;
                        let range = (b * 4096) as usize..((b + n) * 4096) as usize;
                        if rng.gen_bool(0.4) {
                            let data = pattern(t * 10_000 + i, (n * 4096) as usize);
                            v.write(off, &data).unwrap();
                            model[range].copy_from_slice(&data);
                        } else {
                            let mut buf = vec![0xeeu8; (n * 4096) as usize];
                            let cut = rng.gen_range(0..=n as usize) * 4096;
                            let (a, z) = buf.split_at_mut(cut);
                            let mut parts: Vec<&mut [u8]> = vec![a, z];
                            if v.try_read_vectored(off, &mut parts) {
                                inline.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            } else {
                                declined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                v.read_vectored(off, &mut parts).unwrap();
                            }
                            assert!(buf[..] == model[range], "{kind:?}: thread {t} read {i} at block {b}");
                        }
                        if i % 101 == 0 {
                            v.flush().unwrap();
                        }
                    }
                });
            }
        });
        let (inline, declined) = (inline.into_inner(), declined.into_inner());
        // Only shows that both paths ran: how often each does depends on
        // lock contention and on what the map budget keeps.
        assert!(inline > 50 && declined > 0, "{kind:?}: {inline} inline, {declined} declined");
        // Larger than 64 KiB: left to the workers, whatever it holds.
        let mut big = vec![0u8; 128 << 10];
        assert!(!v.try_read_vectored(0, &mut [&mut big[..]]));
        // Out of range: declined, and the blocking call reports it.
        let mut one = vec![0u8; 4096];
        assert!(!v.try_read_vectored(SIZE, &mut [&mut one[..]]));
        assert!(v.read_vectored(SIZE, &mut [&mut one[..]]).is_err());
        std::sync::Arc::into_inner(v).unwrap().close().unwrap();
    }
    // O_DIRECT segments always go to the disk: declined.
    let place = Place::new(Kind::Local);
    let uri = place.uri("d");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &hlfs::OpenOptions { direct_io: true, segment_size: 256 << 10, ..place.opts() }).unwrap();
    let data = pattern(7, 64 << 10);
    for k in 0..8u64 {
        v.write(k * (64 << 10), &data).unwrap(); // past the tail: in the file
    }
    v.flush().unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // tmpfs refuses O_DIRECT (the backend falls back to the page cache):
    // insist only where the segments really are O_DIRECT.
    let dir = place.path("d");
    let tmpfs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && dir.starts_with(f[1])).then(|| (f[1].len(), f[2] == "tmpfs"))
        })
        .max()
        .is_some_and(|(_, t)| t);
    let ok = v.try_read_vectored(0, &mut [&mut buf[..]]);
    assert!(tmpfs || !ok, "an inline read of an O_DIRECT segment completed");
    v.read_vectored(0, &mut [&mut buf[..]]).unwrap();
    assert!(buf == data);
    v.close().unwrap();
}

/// A volume opened with `direct_io` (QEMU's cache=none) writes page-aligned
/// records through O_DIRECT: every segment it writes is a whole number of
/// pages, and the volume reads the same as a model, through the direct and
/// the buffered path, across reopens in either mode and a snapshot view.
#[test]
fn direct_io_volumes_read_and_write_like_buffered_ones() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let direct = hlfs::OpenOptions {
        direct_io: true,
        segment_size: 512 << 10,
        ..place.opts()
    };
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..3u64 {
        let opts = if round == 1 {
            place.opts()
        } else {
            direct.clone()
        };
        let v = Volume::open(&uri, &opts).unwrap();
        for i in 0..200u64 {
            let sectors = SIZE / 512;
            let first = rng.gen_range(0..sectors);
            let n = rng.gen_range(1..=(sectors - first).min(600));
            let data = pattern(round * 1000 + i, (n * 512) as usize);
            if !v.try_write_vectored(first * 512, &[&data]).unwrap() {
                v.write(first * 512, &data).unwrap();
            }
            model[(first * 512) as usize..((first + n) * 512) as usize].copy_from_slice(&data);
            if i % 50 == 0 {
                v.flush().unwrap();
                assert!(read_all(&v) == model, "round {round}, write {i}");
            }
        }
        if round == 0 {
            v.snapshot_create("s").unwrap();
        }
        v.close().unwrap();
        for o in [direct.clone(), place.opts()] {
            let v = Volume::open(&uri, &o).unwrap();
            assert!(read_all(&v) == model, "round {round}: reopened");
            v.close().unwrap();
        }
    }
    let view = Volume::open(
        &format!("{uri}%s"),
        &hlfs::OpenOptions {
            direct_io: true,
            ..hlfs::OpenOptions::read_only()
        },
    )
    .unwrap();
    let _ = read_all(&view);
    // Segments of the direct sessions (0 and 2) are whole pages.
    let dir = place.path("v");
    let mut sizes = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") {
            sizes.push(e.metadata().unwrap().len());
        }
    }
    assert!(
        sizes.iter().filter(|s| *s % 4096 == 0).count() >= sizes.len() / 2,
        "segment sizes {sizes:?}"
    );
}
