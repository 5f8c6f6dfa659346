//! The diff stream reader (`hlfs import-diff`'s input, which may come from
//! anywhere): arbitrary bytes never panic it, and a stream it reads whole
//! (every record and the end record verified) gives the same header and
//! changes again after being written out by the writer.
#![no_main]

use hlfs::diffstream::{DiffItem, DiffReader, DiffWriter, RECORD_LEN};
use libfuzzer_sys::fuzz_target;

/// Rewrites the checksums of the header and of every record that can be
/// followed, so that mutations reach the checks behind them.
fn repair(s: &mut [u8]) {
    if s.len() < 16 {
        return;
    }
    let hl = u32::from_le_bytes(s[12..16].try_into().unwrap()) as usize;
    if !(20..=s.len()).contains(&hl) {
        return;
    }
    let c = crc32c::crc32c(&s[..hl - 4]);
    s[hl - 4..hl].copy_from_slice(&c.to_le_bytes());
    let mut stream = crc32c::crc32c(&s[hl - 4..hl]);
    let mut at = hl;
    while at + RECORD_LEN <= s.len() {
        let kind = s[at];
        let count = u64::from_le_bytes(s[at + 16..at + 24].try_into().unwrap());
        let plen = match kind {
            1 if (1..=256).contains(&count) => count as usize * 4096,
            3 => 16,
            _ => 0,
        };
        let end = at + RECORD_LEN + plen;
        if end > s.len() {
            return;
        }
        if kind == 3 {
            s[at + RECORD_LEN + 8..at + RECORD_LEN + 12].copy_from_slice(&stream.to_le_bytes());
        }
        if plen > 0 {
            let pc = crc32c::crc32c(&s[at + RECORD_LEN..end]);
            s[at + 24..at + 28].copy_from_slice(&pc.to_le_bytes());
        }
        let hc = crc32c::crc32c(&s[at..at + 28]);
        s[at + 28..at + 32].copy_from_slice(&hc.to_le_bytes());
        if kind != 3 {
            stream = crc32c::crc32c_append(stream, &hc.to_le_bytes());
        }
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: bit 0 = repair the checksums first.
    let Some((&flags, body)) = data.split_first() else { return };
    let mut s = body.to_vec();
    if flags & 1 != 0 {
        repair(&mut s);
    }
    let mut input: &[u8] = &s;
    let Ok(mut r) = DiffReader::new(&mut input) else { return };
    let header = r.header().clone();
    let mut items = Vec::new();
    loop {
        match r.next_item() {
            Ok(Some(i)) => items.push(i),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let counts = r.counts();
    assert_eq!(counts.stream_bytes as usize, s.len(), "a whole stream is read to its end");
    let mut out = Vec::new();
    let mut w = DiffWriter::new(&mut out, &header).expect("header");
    for i in &items {
        match i {
            DiffItem::Data { first_block, data } => w.data(*first_block, data).expect("data record"),
            DiffItem::Zero { first_block, count } => w.zero(*first_block, *count).expect("zero record"),
        }
    }
    let c2 = w.finish().expect("end record");
    assert_eq!((c2.records, c2.data_blocks, c2.zero_blocks), (counts.records, counts.data_blocks, counts.zero_blocks));
    let mut again: &[u8] = &out;
    let mut r2 = DiffReader::new(&mut again).expect("re-written header");
    assert_eq!(r2.header(), &header);
    for i in &items {
        assert_eq!(r2.next_item().expect("re-written record").as_ref(), Some(i));
    }
    assert_eq!(r2.next_item().expect("re-written end"), None);
});
