//! VM state: the memory and device state QEMU's `savevm` writes before it
//! takes a snapshot, and `loadvm` reads back after reverting to it.
//!
//! The stream goes into a timeline of its own (`Record::VmState`), outside
//! the head's chain, so no read of the disk sees it: block `b` of that
//! timeline holds bytes `b × 4096 ..` of the stream. `savevm` writes it
//! from offset 0 up, in pieces of any length (`vmstate_write`), then
//! creates the snapshot, whose `SnapshotCreate` record claims the timeline
//! with the stream's size and the guest clock (`snapshot_create_vm`).
//! Deleting the snapshot leaves the timeline unreferenced, and it is
//! dropped with its blocks like any hidden timeline, so the cleaner
//! reclaims the bytes. A stream that no snapshot claimed (`savevm` failed,
//! or QEMU died mid-way) is dropped by the next stream, the next snapshot
//! and the next read-write open.

use super::*;

/// The longest VM state stream a snapshot holds: 1 TiB.
pub const MAX_VM_STATE: u64 = 1 << 40;

impl Volume {
    /// Writes the concatenation of `parts` at `pos` of the VM state being
    /// saved. Offsets and lengths need no alignment. A write at 0 starts a
    /// new stream, dropping one that no snapshot claimed.
    pub fn vmstate_write(&self, pos: u64, parts: &[&[u8]]) -> Result<()> {
        self.check_data_writable()?;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= MAX_VM_STATE)
            .ok_or_else(|| invalid(format!("{}: VM state past {MAX_VM_STATE} bytes", self.uri)))?;
        if len == 0 {
            return Ok(());
        }
        let mut wguard = self.writer.lock();
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, format!("{} is open read-only", self.uri)))?;
        let (pending, written) = {
            let st = self.state.read();
            let written = st.timelines.get(&st.vm_pending).is_some_and(|t| t.entries > 0);
            (st.vm_pending, written)
        };
        let tl = if pending == 0 || (pos == 0 && written) {
            let tl = self.state.read().next_timeline;
            self.log_nosync(w, Record::VmState { timeline: tl })?;
            tl
        } else {
            pending
        };
        let first = pos / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE);
        let mut b = vec![0u8; ((last - first) as usize) * BS];
        // Read-modify-write of partial edge blocks (a stream written in
        // pieces of any length: the previous piece's last block).
        if pos % BLOCK_SIZE != 0 {
            self.read_vm_blocks(tl, first, &mut b[..BS], Some(w))?;
        }
        if end % BLOCK_SIZE != 0 && (last - 1 != first || pos % BLOCK_SIZE == 0) {
            let l = b.len();
            self.read_vm_blocks(tl, last - 1, &mut b[l - BS..], Some(w))?;
        }
        let mut s = (pos - first * BLOCK_SIZE) as usize;
        for p in parts {
            b[s..s + p.len()].copy_from_slice(p);
            s += p.len();
        }
        for (ci, chunk) in b.chunks(MAX_BLOCKS_PER_RECORD as usize * BS).enumerate() {
            let first_block = first + (ci * MAX_BLOCKS_PER_RECORD as usize) as u64;
            let (seg, rec_off, rec_len, rec) = w.append_data_parts(tl, first_block, &[chunk])?;
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, rec_off, rec_len, &rec)?;
        }
        write::release_writer(wguard)
    }

    /// Reads `buf.len()` bytes at `pos` of the VM state saved with snapshot
    /// `name`; past the stream's end the bytes read as zeros.
    pub fn vmstate_read(&self, name: &str, pos: u64, buf: &mut [u8]) -> Result<()> {
        let (tl, size) = {
            let st = self.state.read();
            let s = st
                .snapshot_by_name(name)
                .ok_or_else(|| Self::no_snapshot(&st, &self.uri.to_string(), name))?;
            if s.vm.timeline == 0 {
                return Err(not_found(format!(
                    "snapshot {name:?} of {} holds no VM state (a disk-only snapshot)",
                    self.uri
                )));
            }
            (s.vm.timeline, s.vm.size)
        };
        buf.fill(0);
        let end = (pos.saturating_add(buf.len() as u64)).min(size);
        if pos >= end {
            return Ok(());
        }
        let first = pos / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE);
        let mut b = vec![0u8; ((last - first) as usize) * BS];
        self.read_vm_blocks(tl, first, &mut b, None)?;
        let skip = (pos - first * BLOCK_SIZE) as usize;
        let n = (end - pos) as usize;
        buf[..n].copy_from_slice(&b[skip..skip + n]);
        Ok(())
    }

    /// Creates snapshot `name` with the VM state saved since the stream
    /// began (`vm_state_size` bytes of it; `vm_clock_nsec` the guest clock),
    /// or, with `vm_state_size` 0, disk-only, dropping a stream no snapshot
    /// claimed.
    pub fn snapshot_create_vm(&self, name: &str, vm_state_size: u64, vm_clock_nsec: u64) -> Result<()> {
        validate_snapshot_name(name)?;
        if vm_state_size > MAX_VM_STATE {
            return Err(invalid(format!("VM state of {vm_state_size} bytes is past {MAX_VM_STATE}")));
        }
        self.with_writer(|w| {
            let pending = self.state.read().vm_pending;
            if vm_state_size > 0 && pending == 0 {
                return Err(invalid(format!(
                    "{}: no VM state was saved for snapshot {name:?} (write it with vmstate_write first)",
                    self.uri
                )));
            }
            if vm_state_size == 0 && pending != 0 {
                self.log_nosync(w, Record::VmState { timeline: 0 })?;
            }
            let vm = format::VmStateRef {
                timeline: if vm_state_size > 0 { pending } else { 0 },
                size: vm_state_size,
                clock_nsec: vm_clock_nsec,
            };
            self.snapshot_create_in(w, name, vm, Default::default())
        })
    }

    /// Drops a VM state stream that no snapshot claimed (a `savevm` that
    /// failed, or a writer that died mid-way), if there is one.
    pub(super) fn drop_pending_vmstate(&self, w: &mut LogWriter) -> Result<()> {
        if self.state.read().vm_pending == 0 {
            return Ok(());
        }
        tracing::info!("{}: dropping a VM state stream that no snapshot claimed", self.uri);
        self.log_meta(w, Record::VmState { timeline: 0 })
    }

    /// Reads whole blocks of timeline `tl` alone (no parent, no base:
    /// unmapped blocks read as zeros).
    fn read_vm_blocks(&self, tl: u64, first: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        let once = |buf: &mut [u8]| {
            let entries = self.index().resolve(&[tl], first, (buf.len() / BS) as u64)?;
            self.read_entries(first, &entries, buf, held, false)
        };
        match once(buf) {
            // The cleaner moved a block and deleted its old segment between
            // the lookup and the read: the map points at the copy now.
            Err(e) if e.kind() == ErrorKind::NotFound && !self.read_only => once(buf),
            r => r,
        }
    }

    /// Appends a metadata record and applies it, without making it durable
    /// (the next flush or metadata operation does).
    fn log_nosync(&self, w: &mut LogWriter, rec: Record) -> Result<()> {
        let (seg, off, _) = w.append(&rec, &[])?;
        let mut st = self.state.write();
        apply(&self.index(), &mut st, seg, off, 0, &rec)
    }
}
