//! Diff streams: the changes between two snapshots of a volume, as
//! `hlfs export-diff` writes them and `hlfs import-diff` reads them
//! (docs/format.md §13). All integers are little-endian; `str` is a u16
//! length and UTF-8 bytes, as in the log.
//!
//! ```text
//! header   "HLFSDIFF" version:u32 header_len:u32 volume_size:u64 from_size:u64
//!          source_uuid[16] from_id:u64 to_id:u64 planned_blocks:u64
//!          from_name:str to_name:str source_uri:str crc32c:u32
//! records  kind:u8 reserved[7] first_block:u64 count:u64 payload_crc32c:u32 crc32c:u32 [payload]
//!            kind 1 data: payload = count × 4096 bytes (1 ≤ count ≤ 256)
//!            kind 2 zero: no payload
//!            kind 3 end:  first_block = records before it, count = data blocks,
//!                         payload = zero_blocks:u64 stream_crc32c:u32 reserved:u32
//! ```
//!
//! A record's `payload_crc32c` covers its payload and its `crc32c` its
//! first 28 bytes (so the payload's crc too); the end record's
//! `stream_crc32c` covers the header's crc and every record's `crc32c`
//! before it, in order, so it vouches for every byte of the stream. A reader
//! therefore tells a stream that was cut short (no end record), damaged (a
//! crc fails) or spliced (counts or the stream crc differ) from a whole one,
//! and reports it when it gets there, so an importer applies records as they
//! come and commits only after the end. Payload checksums can be taken by
//! the threads that read the data, apart from the writer.

use crate::error::{corrupt, invalid, Error, ErrorKind, Result};
use crate::format::{Dec, Enc, BLOCK_SIZE, MAX_BLOCKS_PER_RECORD};
use std::io::{Read, Write};

/// First bytes of a diff stream.
pub const MAGIC: &[u8; 8] = b"HLFSDIFF";
/// The stream format version written and read.
pub const VERSION: u32 = 1;
/// Bytes of a record header.
pub const RECORD_LEN: usize = 32;
/// Most blocks one data record carries (1 MiB).
pub const MAX_DATA_BLOCKS: u64 = MAX_BLOCKS_PER_RECORD as u64;
/// Largest header a reader accepts.
const MAX_HEADER: u32 = 1 << 20;
/// Bytes of the header before its strings.
const HEADER_FIXED: usize = 8 + 4 + 4 + 8 + 8 + 16 + 8 + 8 + 8;

const KIND_DATA: u8 = 1;
const KIND_ZERO: u8 = 2;
const KIND_END: u8 = 3;
const END_PAYLOAD: usize = 16;

/// A snapshot as a diff names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapRef {
    /// Id in the source volume.
    pub id: u64,
    /// Name.
    pub name: String,
}

/// What a diff stream is the diff of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffHeader {
    /// Size of the volume at `to`, bytes.
    pub volume_size: u64,
    /// Size of the volume at `from`, bytes (0 for a full diff).
    pub from_size: u64,
    /// UUID of the source volume.
    pub source_uuid: [u8; 16],
    /// URI of the source volume, for messages.
    pub source_uri: String,
    /// The snapshot the changes start from; None for a full diff, which
    /// holds every block of `to` that is not zero and applies to an empty
    /// volume.
    pub from: Option<SnapRef>,
    /// The snapshot the changes lead to.
    pub to: SnapRef,
    /// Blocks the exporter planned to cover (data and zero records), for
    /// progress display only: not checked.
    pub planned_blocks: u64,
}

impl DiffHeader {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(MAGIC).u32(VERSION).u32(0);
        e.u64(self.volume_size)
            .u64(self.from_size)
            .bytes(&self.source_uuid)
            .u64(self.from.as_ref().map_or(0, |f| f.id))
            .u64(self.to.id)
            .u64(self.planned_blocks);
        e.str(self.from.as_ref().map_or("", |f| f.name.as_str()))
            .str(&self.to.name)
            .str(&self.source_uri);
        let len = (e.0.len() + 4) as u32;
        e.0[12..16].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&e.0);
        e.u32(crc);
        e.0
    }

    fn decode(b: &[u8]) -> Result<DiffHeader> {
        let body = &b[..b.len() - 4];
        let stored = u32::from_le_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != stored {
            return Err(corrupt("the diff stream's header fails its checksum"));
        }
        let mut d = Dec::new(&body[16..], "diff stream header");
        let volume_size = d.u64()?;
        let from_size = d.u64()?;
        let source_uuid = d.uuid()?;
        let from_id = d.u64()?;
        let to_id = d.u64()?;
        let planned_blocks = d.u64()?;
        let from_name = d.str()?;
        let to_name = d.str()?;
        let source_uri = d.str()?;
        // Later versions may add fields here; this one reads none.
        let from = (from_id != 0).then_some(SnapRef { id: from_id, name: from_name });
        if to_id == 0 || volume_size == 0 || (from.is_some() && from_size == 0) {
            return Err(corrupt("the diff stream's header names no snapshot or no size"));
        }
        Ok(DiffHeader {
            volume_size,
            from_size,
            source_uuid,
            source_uri,
            from,
            to: SnapRef { id: to_id, name: to_name },
            planned_blocks,
        })
    }

    /// Blocks of the volume at `to`.
    pub fn blocks(&self) -> u64 {
        self.volume_size.div_ceil(BLOCK_SIZE)
    }
}

/// Counts of a diff stream, as its end record states them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffCounts {
    /// Data and zero records.
    pub records: u64,
    /// Blocks carried as data.
    pub data_blocks: u64,
    /// Blocks that zero records cover.
    pub zero_blocks: u64,
    /// Bytes of the whole stream, header and end record included.
    pub stream_bytes: u64,
}

/// A record header with both checksums, for a payload whose crc32c is
/// `payload_crc`.
fn record_header(kind: u8, first_block: u64, count: u64, payload_crc: u32) -> [u8; RECORD_LEN] {
    let mut h = [0u8; RECORD_LEN];
    h[0] = kind;
    h[8..16].copy_from_slice(&first_block.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..28].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_crc(h: &[u8]) -> u32 {
    u32::from_le_bytes(h[h.len() - 4..].try_into().expect("4 bytes"))
}

/// Writes a diff stream: the header at once, then records in increasing
/// block order, then (`finish`) the end record.
pub struct DiffWriter<'a> {
    out: &'a mut dyn Write,
    crc: u32,
    counts: DiffCounts,
    next_block: u64,
    blocks: u64,
}

impl<'a> DiffWriter<'a> {
    /// Starts a stream on `out` with `header`.
    pub fn new(out: &'a mut dyn Write, header: &DiffHeader) -> Result<DiffWriter<'a>> {
        let mut w = DiffWriter { out, crc: 0, counts: DiffCounts::default(), next_block: 0, blocks: header.blocks() };
        let h = header.encode();
        w.put(&h)?;
        w.crc = crc32c::crc32c(&h[h.len() - 4..]);
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io("writing the diff stream", e))?;
        self.counts.stream_bytes += b.len() as u64;
        Ok(())
    }

    /// Writes a record header; the stream checksum takes in its crc.
    fn put_header(&mut self, h: &[u8; RECORD_LEN]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &h[28..]);
        self.put(h)
    }

    fn check(&mut self, first_block: u64, count: u64) -> Result<()> {
        match first_block.checked_add(count) {
            Some(end) if count > 0 && first_block >= self.next_block && end <= self.blocks => {
                self.next_block = end;
                Ok(())
            }
            _ => Err(invalid(format!(
                "diff record for blocks {first_block}+{count} is out of order or past the volume's {} blocks",
                self.blocks
            ))),
        }
    }

    /// Blocks from `first_block` hold `data` (whole blocks, at most 256).
    pub fn data(&mut self, first_block: u64, data: &[u8]) -> Result<()> {
        self.data_with_crc(first_block, data, crc32c::crc32c(data))
    }

    /// `data`, with the caller's crc32c of `data` (taken by another thread).
    pub fn data_with_crc(&mut self, first_block: u64, data: &[u8], crc: u32) -> Result<()> {
        let count = (data.len() / BLOCK_SIZE as usize) as u64;
        debug_assert!(data.len() % BLOCK_SIZE as usize == 0 && count <= MAX_DATA_BLOCKS);
        self.check(first_block, count)?;
        self.put_header(&record_header(KIND_DATA, first_block, count, crc))?;
        self.put(data)?;
        self.counts.records += 1;
        self.counts.data_blocks += count;
        Ok(())
    }

    /// `count` blocks from `first_block` read as zeros.
    pub fn zero(&mut self, first_block: u64, count: u64) -> Result<()> {
        self.check(first_block, count)?;
        self.put_header(&record_header(KIND_ZERO, first_block, count, 0))?;
        self.counts.records += 1;
        self.counts.zero_blocks += count;
        Ok(())
    }

    /// Writes the end record and flushes; returns the stream's counts.
    pub fn finish(mut self) -> Result<DiffCounts> {
        let mut p = Enc::default();
        p.u64(self.counts.zero_blocks).u32(self.crc).u32(0);
        let h = record_header(KIND_END, self.counts.records, self.counts.data_blocks, crc32c::crc32c(&p.0));
        self.put(&h)?;
        self.put(&p.0)?;
        self.out.flush().map_err(|e| Error::io("writing the diff stream", e))?;
        Ok(self.counts)
    }
}

/// One change read from a diff stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffItem {
    /// Blocks from `first_block` hold `data` (whole blocks).
    Data {
        /// First block.
        first_block: u64,
        /// The blocks' bytes.
        data: Vec<u8>,
    },
    /// Blocks `[first_block, first_block + count)` read as zeros.
    Zero {
        /// First block.
        first_block: u64,
        /// Number of blocks.
        count: u64,
    },
}

/// Reads a diff stream, verifying as it goes.
pub struct DiffReader<'a> {
    input: &'a mut dyn Read,
    header: DiffHeader,
    crc: u32,
    counts: DiffCounts,
    next_block: u64,
    done: bool,
}

/// Reads exactly `buf.len()` bytes; false if the input ended first.
fn read_exact_or_end(input: &mut dyn Read, buf: &mut [u8]) -> Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the diff stream", e)),
        }
    }
    Ok(true)
}

fn truncated(what: &str) -> Error {
    corrupt(format!(
        "the diff stream ends early, {what} (truncated? an export-diff that failed or was interrupted, or a copy cut short)"
    ))
}

impl<'a> DiffReader<'a> {
    /// Reads and verifies the header.
    pub fn new(input: &'a mut dyn Read) -> Result<DiffReader<'a>> {
        let mut fixed = [0u8; 16];
        if !read_exact_or_end(input, &mut fixed)? {
            return Err(truncated("in its header"));
        }
        if &fixed[..8] != MAGIC {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "this is not an HLFS diff stream (it does not start with HLFSDIFF); make one with `hlfs export-diff`",
            ));
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4"));
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("diff stream version {version} is not supported (this hlfs reads version {VERSION}); import it with the hlfs that wrote it"),
            ));
        }
        let len = u32::from_le_bytes(fixed[12..16].try_into().expect("4"));
        if !(HEADER_FIXED as u32 + 6 + 4..=MAX_HEADER).contains(&len) {
            return Err(corrupt(format!("the diff stream's header length {len} is impossible")));
        }
        let mut b = vec![0u8; len as usize];
        b[..16].copy_from_slice(&fixed);
        if !read_exact_or_end(input, &mut b[16..])? {
            return Err(truncated("in its header"));
        }
        let header = DiffHeader::decode(&b)?;
        let crc = crc32c::crc32c(&b[b.len() - 4..]);
        Ok(DiffReader {
            input,
            header,
            crc,
            counts: DiffCounts { stream_bytes: len as u64, ..Default::default() },
            next_block: 0,
            done: false,
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    fn take(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        if !read_exact_or_end(self.input, buf)? {
            return Err(truncated(what));
        }
        Ok(())
    }

    fn account(&mut self, b: &[u8]) {
        self.counts.stream_bytes += b.len() as u64;
    }

    /// The next change, or None after a verified end record (the stream is
    /// then whole: every count and checksum matched, and nothing follows).
    pub fn next_item(&mut self) -> Result<Option<DiffItem>> {
        if self.done {
            return Ok(None);
        }
        let at = self.counts.records;
        let mut h = [0u8; RECORD_LEN];
        self.take(&mut h, &format!("after {at} record(s), where the next record or the end record should be"))?;
        let first_block = u64::from_le_bytes(h[8..16].try_into().expect("8"));
        let count = u64::from_le_bytes(h[16..24].try_into().expect("8"));
        let payload_crc = u32::from_le_bytes(h[24..28].try_into().expect("4"));
        let bad = |what: String| corrupt(format!("the diff stream is damaged: record {at} {what}"));
        if crc32c::crc32c(&h[..28]) != header_crc(&h) {
            return Err(bad("has a header that fails its checksum".into()));
        }
        let stream_crc_before = self.crc;
        if h[0] != KIND_END {
            self.crc = crc32c::crc32c_append(self.crc, &h[28..]);
        }
        match h[0] {
            KIND_DATA => {
                if count == 0 || count > MAX_DATA_BLOCKS {
                    return Err(bad(format!("is a data record of {count} blocks (1 to {MAX_DATA_BLOCKS} allowed)")));
                }
                self.check_range(first_block, count).map_err(|e| bad(e.to_string()))?;
                let mut data = vec![0u8; (count * BLOCK_SIZE) as usize];
                self.take(&mut data, &format!("inside record {at}"))?;
                if crc32c::crc32c(&data) != payload_crc {
                    return Err(bad(format!("(data, blocks {first_block}+{count}) fails its checksum")));
                }
                self.account(&h);
                self.account(&data);
                self.counts.records += 1;
                self.counts.data_blocks += count;
                Ok(Some(DiffItem::Data { first_block, data }))
            }
            KIND_ZERO => {
                if payload_crc != 0 {
                    return Err(bad(format!("(zero, blocks {first_block}+{count}) has a payload checksum")));
                }
                self.check_range(first_block, count).map_err(|e| bad(e.to_string()))?;
                self.account(&h);
                self.counts.records += 1;
                self.counts.zero_blocks += count;
                Ok(Some(DiffItem::Zero { first_block, count }))
            }
            KIND_END => {
                let mut p = [0u8; END_PAYLOAD];
                self.take(&mut p, "inside its end record")?;
                if crc32c::crc32c(&p) != payload_crc {
                    return Err(bad("(the end record) fails its checksum".into()));
                }
                let zero_blocks = u64::from_le_bytes(p[..8].try_into().expect("8"));
                let stream_crc = u32::from_le_bytes(p[8..12].try_into().expect("4"));
                let c = self.counts;
                if first_block != c.records || count != c.data_blocks || zero_blocks != c.zero_blocks {
                    return Err(corrupt(format!(
                        "the diff stream is damaged: its end record counts {first_block} records, {count} data blocks and \
                         {zero_blocks} zero blocks, but {} records, {} data blocks and {} zero blocks came before it",
                        c.records, c.data_blocks, c.zero_blocks
                    )));
                }
                if stream_crc != stream_crc_before {
                    return Err(corrupt("the diff stream is damaged: its checksum over the whole stream does not match"));
                }
                self.account(&h);
                self.account(&p);
                let mut more = [0u8; 1];
                if read_exact_or_end(self.input, &mut more)? {
                    return Err(corrupt("the diff stream has bytes after its end record; it is not one whole stream"));
                }
                self.done = true;
                Ok(None)
            }
            k => Err(bad(format!("has unknown kind {k}"))),
        }
    }

    fn check_range(&mut self, first_block: u64, count: u64) -> Result<()> {
        let blocks = self.header.blocks();
        match first_block.checked_add(count) {
            Some(end) if count > 0 && first_block >= self.next_block && end <= blocks => {
                self.next_block = end;
                Ok(())
            }
            _ => Err(invalid(format!(
                "covers blocks {first_block}+{count}, out of order or past the volume's {blocks} blocks"
            ))),
        }
    }

    /// Counts so far (after `next_item` returned None: the whole stream's).
    pub fn counts(&self) -> DiffCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(from: bool) -> DiffHeader {
        DiffHeader {
            volume_size: 64 * BLOCK_SIZE,
            from_size: if from { 64 * BLOCK_SIZE } else { 0 },
            source_uuid: [5; 16],
            source_uri: "local:///v".into(),
            from: from.then(|| SnapRef { id: 2, name: "a".into() }),
            to: SnapRef { id: 3, name: "b".into() },
            planned_blocks: 9,
        }
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = DiffWriter::new(&mut out, &header(true)).unwrap();
        w.data(1, &[7u8; 8192]).unwrap();
        w.zero(10, 5).unwrap();
        w.data(20, &[9u8; 4096]).unwrap();
        let c = w.finish().unwrap();
        assert_eq!((c.records, c.data_blocks, c.zero_blocks), (3, 3, 5));
        assert_eq!(c.stream_bytes as usize, out.len());
        out
    }

    fn read_all(b: &[u8]) -> Result<(DiffHeader, Vec<DiffItem>)> {
        let mut input: &[u8] = b;
        let mut r = DiffReader::new(&mut input)?;
        let h = r.header().clone();
        let mut items = Vec::new();
        while let Some(i) = r.next_item()? {
            items.push(i);
        }
        Ok((h, items))
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let (h, items) = read_all(&s).unwrap();
        assert_eq!(h, header(true));
        assert_eq!(
            items,
            vec![
                DiffItem::Data { first_block: 1, data: vec![7u8; 8192] },
                DiffItem::Zero { first_block: 10, count: 5 },
                DiffItem::Data { first_block: 20, data: vec![9u8; 4096] },
            ]
        );
        let mut out = Vec::new();
        DiffWriter::new(&mut out, &header(false)).unwrap().finish().unwrap();
        assert_eq!(read_all(&out).unwrap().0.from, None);
    }

    /// Every truncation and every single flipped bit is refused (never an
    /// Ok with other contents).
    #[test]
    fn every_cut_and_flipped_bit_is_refused() {
        let s = sample();
        for cut in 0..s.len() {
            assert!(read_all(&s[..cut]).is_err(), "cut at {cut} of {}", s.len());
        }
        for i in 0..s.len() {
            for bit in [0u8, 3, 7] {
                let mut t = s.clone();
                t[i] ^= 1 << bit;
                assert!(read_all(&t).is_err(), "bit {bit} of byte {i} flipped");
            }
        }
        let mut t = s.clone();
        t.push(0);
        let e = read_all(&t).unwrap_err();
        assert!(e.to_string().contains("after its end record"), "{e}");
    }

    /// Records spliced out of another stream (valid on their own) are caught
    /// by the end record's counts and stream checksum.
    #[test]
    fn a_dropped_record_is_caught_at_the_end() {
        let s = sample();
        let hlen = header(true).encode().len();
        let rec = RECORD_LEN + 8192;
        let mut t = s[..hlen].to_vec();
        t.extend_from_slice(&s[hlen + rec..]); // without the first data record
        let e = read_all(&t).unwrap_err();
        assert!(e.to_string().contains("end record counts"), "{e}");
    }

    #[test]
    fn writer_refuses_records_out_of_order() {
        let mut out = Vec::new();
        let mut w = DiffWriter::new(&mut out, &header(true)).unwrap();
        w.data(5, &[1u8; 4096]).unwrap();
        assert!(w.zero(3, 1).is_err());
        assert!(w.zero(60, 10).is_err(), "past the end");
    }
}
