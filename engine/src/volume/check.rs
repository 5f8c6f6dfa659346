//! `fsck`: reading a whole volume back and checking it.

use super::*;

/// Results of `fsck`.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Segments in the log chain.
    pub segments: u64,
    /// Records verified.
    pub records: u64,
    /// Data blocks verified.
    pub data_blocks: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Problems that make data unreadable (each names segment and offset).
    pub errors: Vec<String>,
    /// Harmless findings (torn tail after a crash, abandoned segments).
    pub notes: Vec<String>,
    /// Whether the index was rebuilt.
    pub rebuilt_index: bool,
}

/// Verifies every record of the volume's log and every checkpoint. With
/// `rebuild_index`, also rebuilds the sled index from the log alone.
pub fn fsck(uri: &str, rebuild_index: bool) -> Result<FsckReport> {
    let u = parse_uri(uri)?;
    let backend = backend::for_uri(&u)?;
    require_exists(&*backend, &u)?;
    let dir = &u.path;
    let uuid = read_uuid(&*backend, &u)?;
    let mut rep = FsckReport::default();
    let base = match cleaner::log_base(&*backend, dir, &uuid) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            rep.errors.push(e.to_string());
            return Ok(rep);
        }
        Err(e) => return Err(e),
    };
    if base != LogPos::default() {
        rep.notes.push(format!(
            "the log starts at the checkpoint in segment {} (earlier segments were cleaned)",
            format::segment_name(base.segment)
        ));
    }
    let layout = match log::layout(&*backend, dir, &uuid, base.segment) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            // The segment chain itself is broken: nothing after the break
            // can be placed, so there is nothing further to check or rebuild.
            rep.errors.push(e.to_string());
            return Ok(rep);
        }
        Err(e) => return Err(e),
    };
    for a in &layout.abandoned {
        rep.notes.push(format!(
            "segment {} is not part of the log (abandoned after a crash)",
            format::segment_name(*a)
        ));
    }
    let mut next_seq = 0u64;
    let n = layout.chain.len();
    for (i, (seg, bound)) in layout.chain.iter().enumerate() {
        rep.segments += 1;
        let mut f = |s: Scanned| -> Result<()> {
            if s.seq < next_seq {
                rep.errors.push(format!(
                    "segment {} offset {}: sequence {} goes backwards",
                    format::segment_name(s.segment),
                    s.offset,
                    s.seq
                ));
            }
            next_seq = s.seq + 1;
            rep.records += 1;
            rep.bytes += s.len;
            if let Record::Batch { extents, .. } = &s.record {
                rep.data_blocks += extents.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
            }
            if let Record::Data {
                crcs, first_block, ..
            } = &s.record
            {
                rep.data_blocks += crcs.len() as u64;
                if !s.damaged_blocks.is_empty() {
                    let blocks: Vec<String> = s
                        .damaged_blocks
                        .iter()
                        .map(|i| (first_block + *i as u64).to_string())
                        .collect();
                    rep.errors.push(format!(
                        "segment {} offset {}: data record damaged: block(s) {} fail their checksums (reads of them fail; the record's other {} block(s) are intact)",
                        format::segment_name(s.segment),
                        s.offset,
                        blocks.join(", "),
                        crcs.len() - blocks.len()
                    ));
                }
            }
            Ok(())
        };
        match log::scan_segment_salvaging(&*backend, dir, *seg, 0, *bound, &mut f) {
            Ok(valid) => {
                if i + 1 == n {
                    let len = backend.open_read(&log::segment_path(dir, *seg))?.len()?;
                    if len > valid {
                        // A tear is what a crash leaves: garbage to the end,
                        // after everything any checkpoint has seen.
                        let covered = checkpoint::list(&*backend, dir)?
                            .into_iter()
                            .filter_map(|c| checkpoint::position(&*backend, dir, c, &uuid).ok())
                            .filter(|p| p.segment == *seg && p.offset > valid)
                            .map(|p| p.offset)
                            .max();
                        let later = log::valid_record_after(&*backend, dir, *seg, valid)?;
                        if let Some(end) = covered {
                            rep.errors.push(format!(
                                "segment {} offset {valid}: damaged record inside the part a checkpoint covers (up to offset {end})",
                                format::segment_name(*seg)
                            ));
                        } else if let Some(at) = later.filter(|&at| {
                            !log::is_hole(&*backend, dir, *seg, valid, at).unwrap_or(false)
                        }) {
                            rep.errors.push(format!(
                                "segment {} offset {valid}: damaged record followed by valid records (from offset {at}); after a power loss these may be unflushed writes that reached the disk out of order",
                                format::segment_name(*seg)
                            ));
                        } else if let Some(at) = later {
                            // Chunks written at once (O_DIRECT segments) land
                            // in any order; a flush waits for all of them, so
                            // a never-written gap means none was flushed.
                            rep.notes.push(format!(
                                "segment {} has {} bytes of torn tail after offset {valid}: a gap never written up to offset {at}, then writes that landed before it (in flight together at a crash; never flushed; ignored)",
                                format::segment_name(*seg),
                                len - valid
                            ));
                        } else {
                            rep.notes.push(format!(
                                "segment {} has {} bytes of torn tail after offset {valid} (writes never flushed; ignored)",
                                format::segment_name(*seg),
                                len - valid
                            ));
                        }
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => rep.errors.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    for seq in checkpoint::list(&*backend, dir)? {
        match checkpoint::verify(&*backend, dir, seq, &uuid) {
            Ok(()) => rep.checkpoints += 1,
            Err(e) if e.kind() == ErrorKind::Corrupt => rep
                .notes
                .push(format!("{e} (it will be skipped; the log is intact)")),
            Err(e) => return Err(e),
        }
    }
    if rebuild_index {
        let v = Volume::open(
            uri,
            &OpenOptions {
                rebuild_index: true,
                ..Default::default()
            },
        )?;
        v.close()?;
        rep.rebuilt_index = true;
    }
    Ok(rep)
}
