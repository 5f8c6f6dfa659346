//! The record and segment parsers: every decoder on arbitrary bytes, a
//! decode → encode → decode round trip for each record that parses, and the
//! segment scanner that recovery and fsck use, in both its modes.
#![no_main]

#[path = "common.rs"]
mod common;

use hlfs::backend::mem::MemBackend;
use hlfs::backend::Backend;
use hlfs::format::{self, Kind, Record, RECORD_HEADER_LEN};
use hlfs::log;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: bit 0 = repair record checksums, so that the payload
    // decoders see mutated input rather than a crc mismatch.
    let Some((&flags, body)) = data.split_first() else { return };
    let mut seg = body.to_vec();
    if flags & 1 != 0 {
        common::repair_records(&mut seg);
    }

    let mut off = 0usize;
    while off + RECORD_HEADER_LEN <= seg.len() {
        let Ok(h) = format::decode_header(&seg[off..]) else { break };
        let end = off + RECORD_HEADER_LEN + h.len as usize;
        if end > seg.len() {
            break;
        }
        if format::verify_crc(&seg[off..end], h.crc).is_ok() {
            if let Ok(rec) = format::decode_payload(h.kind, &seg[off + RECORD_HEADER_LEN..end]) {
                assert_eq!(rec.kind(), h.kind);
                if !matches!(h.kind, Kind::Data | Kind::Batch) {
                    let mut out = Vec::new();
                    format::encode_record(&mut out, h.seq, &rec, &[]);
                    let h2 = format::decode_header(&out).expect("re-encoded header");
                    format::verify_crc(&out, h2.crc).expect("re-encoded crc");
                    let rec2: Record = format::decode_payload(h2.kind, &out[RECORD_HEADER_LEN..])
                        .expect("re-encoded record decodes");
                    assert_eq!(rec, rec2);
                    assert_eq!(h2.seq, h.seq);
                }
            }
        }
        off = end;
    }

    let b = MemBackend::new();
    let path = log::segment_path("/v", 0);
    let mut f = b.create(&path).expect("create");
    f.append(&seg).expect("append");
    f.close().expect("close");
    let mut last = 0u64;
    let tail = log::scan_segment(&b, "/v", 0, 0, None, &mut |s| {
        assert!(s.offset >= last, "records go forward");
        last = s.offset + s.len;
        Ok(())
    });
    if let Ok(end) = tail {
        assert!(end as usize <= seg.len());
        // Everything up to the end of a quiet scan must also pass a strict one.
        log::scan_segment(&b, "/v", 0, 0, Some(end), &mut |_| Ok(()))
            .expect("a prefix that scans quietly scans strictly");
    }
    let _ = log::scan_segment(&b, "/v", 0, 0, Some(seg.len() as u64), &mut |_| Ok(()));
    let _ = log::valid_record_after(&b, "/v", 0, 0);
});
