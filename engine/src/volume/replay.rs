//! Applying log records to the index and the state, and replaying the
//! log after a position (open, fsck, read-only views).

use super::*;

/// Applies one log record to the index and state. Shared by replay and the
/// live write path, so both always agree.
/// `rec_off` and `rec_len` locate the record in segment `seg`.
pub(super) fn apply(
    index: &Index,
    st: &mut VolState,
    seg: u64,
    rec_off: u64,
    rec_len: u64,
    rec: &Record,
) -> Result<()> {
    match rec {
        Record::SegmentHeader { .. } => {}
        Record::VolumeCreate {
            uuid,
            virtual_size,
            created,
            ..
        } => {
            *st = VolState {
                uuid: *uuid,
                virtual_size: *virtual_size,
                created: *created,
                head: 1,
                next_timeline: 2,
                next_snapshot: 1,
                ..Default::default()
            };
            st.timelines.insert(1, Timeline::default());
        }
        Record::Data { .. } | Record::Batch { .. } => {
            for x in rec.data_extents(rec_off, rec_len) {
                let end = x.data_off + x.crcs.len() as u64 * BLOCK_SIZE;
                let off = u32::try_from(x.data_off)
                    .ok()
                    .filter(|_| end <= u32::MAX as u64)
                    .ok_or_else(|| corrupt("data offset beyond 4 GiB in a segment"))?;
                index.set_extent(
                    st,
                    x.timeline,
                    x.first_block,
                    Extent::data(seg, off, x.crcs),
                )?;
            }
        }
        Record::Zero {
            timeline,
            first_block,
            count,
        } => index.zero_range(st, *timeline, *first_block, *count)?,
        Record::SnapshotCreate {
            id,
            timeline,
            new_head,
            virtual_size,
            secs,
            nsecs,
            name,
            vm,
            source,
        } => {
            if vm.timeline != 0 {
                if vm.timeline != st.vm_pending {
                    return Err(corrupt(format!(
                        "snapshot {name:?} claims VM state timeline {} but the pending one is {}",
                        vm.timeline, st.vm_pending
                    )));
                }
                st.vm_pending = 0;
            }
            st.snapshots.insert(
                *id,
                SnapshotMeta {
                    id: *id,
                    name: name.clone(),
                    timeline: *timeline,
                    secs: *secs,
                    nsecs: *nsecs,
                    virtual_size: *virtual_size,
                    vm: *vm,
                    source: *source,
                },
            );
            st.timelines.insert(
                *new_head,
                Timeline {
                    parent: Some(*timeline),
                    ..Default::default()
                },
            );
            st.head = *new_head;
            st.head_resized = false;
            st.next_timeline = st.next_timeline.max(new_head + 1);
            st.next_snapshot = st.next_snapshot.max(id + 1);
        }
        Record::SnapshotDelete { id } => {
            st.snapshots.remove(id);
            index.collect_hidden(st)?;
        }
        Record::Revert {
            target_id,
            auto_id,
            new_head,
            secs,
            nsecs,
            auto_name,
        } => {
            let target = st
                .snapshots
                .get(target_id)
                .cloned()
                .ok_or_else(|| corrupt(format!("revert to unknown snapshot id {target_id}")))?;
            if *auto_id != 0 {
                st.snapshots.insert(
                    *auto_id,
                    SnapshotMeta {
                        id: *auto_id,
                        name: auto_name.clone(),
                        timeline: st.head,
                        secs: *secs,
                        nsecs: *nsecs,
                        virtual_size: st.virtual_size,
                        vm: Default::default(),
                        source: Default::default(),
                    },
                );
                st.next_snapshot = st.next_snapshot.max(auto_id + 1);
            }
            st.timelines.insert(
                *new_head,
                Timeline {
                    parent: Some(target.timeline),
                    ..Default::default()
                },
            );
            st.head = *new_head;
            st.head_resized = false;
            st.virtual_size = target.virtual_size;
            st.next_timeline = st.next_timeline.max(new_head + 1);
            index.collect_hidden(st)?;
        }
        // An empty base URI drops the base (a flattened clone).
        Record::SetBase(b) => st.base = (!b.uri.is_empty()).then(|| b.clone()),
        Record::Resize { virtual_size } => {
            st.virtual_size = *virtual_size;
            st.head_resized = true;
        }
        Record::VmState { timeline } => {
            // An earlier stream no snapshot claimed goes first.
            st.vm_pending = 0;
            if *timeline != 0 {
                if st.timelines.contains_key(timeline) {
                    return Err(corrupt(format!("VM state in timeline {timeline}, which exists")));
                }
                st.timelines.insert(*timeline, Timeline::default());
                st.vm_pending = *timeline;
                st.next_timeline = st.next_timeline.max(timeline + 1);
            }
            index.collect_hidden(st)?;
        }
    }
    Ok(())
}

/// Where replay ended.
pub(super) struct ReplayEnd {
    pub(super) last: (u64, u64),
    pub(super) next_seq: u64,
    pub(super) max_segment: u64,
    /// Segments outside the chain (`log::Layout::abandoned`).
    pub(super) abandoned: Vec<u64>,
}

pub(super) fn replay(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    index: &Index,
    st: &mut VolState,
    from: LogPos,
    salvage: bool,
) -> Result<ReplayEnd> {
    let layout = log::layout(backend, dir, uuid, from.segment)?;
    let mut end = ReplayEnd {
        last: (from.segment, from.offset),
        next_seq: from.next_seq,
        max_segment: layout.max_segment,
        abandoned: layout.abandoned.clone(),
    };
    if layout.chain.is_empty() && from.segment != 0 {
        return Err(corrupt(format!(
            "{dir}: the log after segment {} is missing",
            format::segment_name(from.segment)
        )));
    }
    for (seg, bound) in layout.chain {
        let start = if seg == from.segment { from.offset } else { 0 };
        let mut f = |s: Scanned| -> Result<()> {
            if s.seq < end.next_seq && !(s.seq == 0 && end.next_seq == 0) {
                return Err(corrupt(format!(
                    "{dir}: segment {} offset {}: sequence {} goes backwards (expected at least {})",
                    format::segment_name(s.segment),
                    s.offset,
                    s.seq,
                    end.next_seq
                )));
            }
            end.next_seq = s.seq + 1;
            apply(index, st, s.segment, s.offset, s.len, &s.record)
        };
        let valid = if salvage {
            log::scan_segment_salvaging(backend, dir, seg, start, bound, &mut f)?
        } else {
            log::scan_segment(backend, dir, seg, start, bound, &mut f)?
        };
        end.last = (seg, valid);
    }
    Ok(end)
}

/// Bytes of log from `from` to `end` (segment, valid length), following the
/// segment chain.
pub(super) fn log_bytes_after(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    from: LogPos,
    end: (u64, u64),
) -> Result<u64> {
    let layout = log::layout(backend, dir, uuid, from.segment)?;
    let mut total = 0;
    for (seg, bound) in layout.chain {
        let len = match bound {
            Some(b) => b,
            None if seg == end.0 => end.1,
            None => backend.open_read(&log::segment_path(dir, seg))?.len()?,
        };
        let start = if seg == from.segment { from.offset } else { 0 };
        total += len.saturating_sub(start);
    }
    Ok(total)
}

/// Whether the log still runs through `pos` (a position a cached index
/// recorded): its segment is in the chain and holds at least `pos.offset`
/// valid bytes.
pub(super) fn log_passes_through(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    pos: LogPos,
) -> Result<bool> {
    if pos.segment == 0 {
        return Ok(true);
    }
    let layout = match log::layout(backend, dir, uuid, pos.segment) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(match layout.chain.first() {
        Some((s, Some(bound))) if *s == pos.segment => *bound >= pos.offset,
        Some((s, None)) if *s == pos.segment => {
            backend.open_read(&log::segment_path(dir, *s))?.len()? >= pos.offset
        }
        _ => false,
    })
}

/// A fingerprint of the log just before `pos`: the CRC of up to 4 KiB
/// before it in its segment (the end of the last record, with its sequence
/// number and checksum). A cached index whose log took another course (a
/// restored backup, a broken lock) differs here even where positions agree.
pub(super) fn log_tail(backend: &dyn Backend, dir: &str, pos: LogPos) -> Result<Vec<u8>> {
    if pos.segment == 0 || pos.offset == 0 {
        return Ok(Vec::new());
    }
    let n = pos.offset.min(4096);
    let mut buf = vec![0u8; n as usize];
    backend
        .open_read(&log::segment_path(dir, pos.segment))?
        .read_exact_at(pos.offset - n, &mut buf)?;
    Ok(crc32c::crc32c(&buf).to_le_bytes().to_vec())
}
