//! Checkpoint decoding: a checkpoint file of arbitrary bytes is opened,
//! searched in place (as read-only openers do), verified (as fsck does) and
//! loaded (as a writer's open does). Errors are fine; panics, hangs and
//! answers that disagree between the paths are not.
#![no_main]

#[path = "common.rs"]
mod common;

use hlfs::backend::mem::MemBackend;
use hlfs::backend::Backend;
use hlfs::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: bit 0 = repair the checksums, so that mutations reach the
    // state decoder, the directory and the chunks.
    let Some((&flags, body)) = data.split_first() else { return };
    let mut file = body.to_vec();
    if flags & 1 != 0 {
        common::repair_checkpoint(&mut file);
    }
    // The file's own uuid, so that mutations are not all "another volume".
    let mut uuid = [0u8; 16];
    if file.len() >= 24 {
        uuid.copy_from_slice(&file[8..24]);
    }

    let b = MemBackend::new();
    let seq = 7;
    let mut f = b.create(&format!("/v/{}", checkpoint::name(seq))).expect("create");
    f.append(&file).expect("append");
    f.close().expect("close");

    let _ = checkpoint::position(&b, "/v", seq, &uuid);
    let verified = checkpoint::verify(&b, "/v", seq, &uuid).is_ok();
    let Ok(r) = checkpoint::Reader::open(&b, "/v", seq, &uuid) else {
        assert!(!verified, "verify passed but open failed");
        return;
    };
    // Every entry a full range scan yields must be found by a point lookup.
    let all: Vec<_> = r.range([0; 16], [0xff; 16]).take(4096).collect();
    let mut ok = true;
    for e in &all {
        match e {
            Ok((k, v)) => {
                if verified {
                    assert_eq!(r.get(k).expect("get after verify").as_ref(), Some(v));
                } else {
                    let _ = r.get(k);
                }
            }
            Err(_) => ok = false,
        }
    }
    if verified {
        assert!(ok, "a verified checkpoint failed a range scan");
    }
    // Lookups of arbitrary keys taken from the input.
    for k in body.chunks_exact(16).take(64) {
        let _ = r.get(k.try_into().expect("16"));
    }
    let idx = hlfs::index::Index::layered(None);
    let loaded = checkpoint::load(&b, "/v", seq, &uuid, &idx);
    if verified {
        let l = loaded.expect("a verified checkpoint loads");
        assert_eq!(l.pos, r.pos);
        assert_eq!(idx.iter_all().count() as u64, r.total);
    }
});
