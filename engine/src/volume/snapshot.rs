//! Snapshots: create, delete, revert and list.

use super::*;

impl Volume {
    pub(super) fn no_snapshot(st: &VolState, vol: &str, name: &str) -> Error {
        let mut names: Vec<&str> = st.snapshots.values().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        let list = if names.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has: {}", names.join(", "))
        };
        not_found(format!("volume {vol} has no snapshot {name:?}; {list}"))
    }

    /// Creates snapshot `name` of the head. O(1): the head timeline is frozen
    /// and a new, empty head starts on top of it. Disk-only: a VM state
    /// stream that no snapshot claimed is dropped (see `snapshot_create_vm`).
    pub fn snapshot_create(&self, name: &str) -> Result<()> {
        self.snapshot_create_vm(name, 0, 0)
    }

    /// `snapshot_create` under the writer, with VM state `vm` and, for a
    /// snapshot that `import-diff` takes, the source snapshot it reproduces.
    pub(super) fn snapshot_create_in(
        &self,
        w: &mut LogWriter,
        name: &str,
        vm: format::VmStateRef,
        source: format::SnapshotSource,
    ) -> Result<()> {
        let rec = {
            let st = self.state.read();
            if st.snapshot_by_name(name).is_some() {
                return Err(Error::new(
                    ErrorKind::Exists,
                    format!("volume {} already has a snapshot named {name:?}", self.uri),
                ));
            }
            let (secs, nsecs) = log::now();
            Record::SnapshotCreate {
                id: st.next_snapshot,
                timeline: st.head,
                new_head: st.next_timeline,
                virtual_size: st.virtual_size,
                secs,
                nsecs,
                name: name.to_string(),
                vm,
                source,
            }
        };
        self.log_meta(w, rec)
    }

    /// Deletes snapshot `name`. Refused while clones depend on it. What it
    /// alone held becomes reclaimable; no other snapshot's or clone's reads change.
    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        self.with_writer(|w| {
            let id = {
                let st = self.state.read();
                st.snapshot_by_name(name)
                    .ok_or_else(|| Self::no_snapshot(&st, &self.uri.to_string(), name))?
                    .id
            };
            let clones: Vec<String> = live_clones(
                &*self.backend,
                &self.dir,
                &self.uri.without_snapshot().to_string(),
            )?
            .into_iter()
            .filter(|(sid, _)| *sid == id)
            .map(|(_, c)| c)
            .collect();
            if !clones.is_empty() {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!(
                        "snapshot {name:?} of {} has clones: {}; delete those clones first",
                        self.uri,
                        clones.join(", ")
                    ),
                ));
            }
            self.log_meta(w, Record::SnapshotDelete { id })
        })
    }

    /// Branches the head back to snapshot `name`. If the head holds writes
    /// made since then, it is kept as an automatically named snapshot
    /// (`pre-revert-N`) so nothing is lost.
    pub fn snapshot_revert(&self, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        self.with_writer(|w| {
            let rec = {
                let st = self.state.read();
                let target = st
                    .snapshot_by_name(name)
                    .ok_or_else(|| Self::no_snapshot(&st, &self.uri.to_string(), name))?;
                let head = st.timelines.get(&st.head).cloned().unwrap_or_default();
                // Unchanged: nothing written and no resize since the head
                // branched off a snapshot that still exists, which then
                // holds the same contents. A head on a hidden parent (its
                // snapshot deleted, the timeline kept for another branch)
                // is the only copy of that state, so it is kept too.
                let on_snapshot = head
                    .parent
                    .is_some_and(|p| st.snapshots.values().any(|s| s.timeline == p));
                let head_changed = head.entries > 0 || st.head_resized || !on_snapshot;
                let (auto_id, auto_name) = if head_changed {
                    let id = st.next_snapshot;
                    let mut n = format!("pre-revert-{id}");
                    let mut k = 1;
                    while st.snapshot_by_name(&n).is_some() {
                        n = format!("pre-revert-{id}-{k}");
                        k += 1;
                    }
                    (id, n)
                } else {
                    (0, String::new())
                };
                let (secs, nsecs) = log::now();
                Record::Revert {
                    target_id: target.id,
                    auto_id,
                    new_head: st.next_timeline,
                    secs,
                    nsecs,
                    auto_name,
                }
            };
            if let Record::Revert {
                auto_id, auto_name, ..
            } = &rec
            {
                if *auto_id != 0 {
                    tracing::info!(
                        "{}: keeping the previous head as snapshot {auto_name:?}",
                        self.uri
                    );
                }
            }
            self.log_meta(w, rec)
        })
    }

    /// Snapshots, oldest first, with the clones that depend on each (which
    /// takes a listing of the backend).
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let clones = live_clones(
            &*self.backend,
            &self.dir,
            &self.uri.without_snapshot().to_string(),
        )?;
        let mut list = self.snapshots_in_memory();
        for s in &mut list {
            s.clones = clones
                .iter()
                .filter(|(id, _)| *id == s.id)
                .map(|(_, c)| c.clone())
                .collect();
        }
        Ok(list)
    }

    /// Snapshots, oldest first, from the open volume's state alone, without
    /// their clones (`clones` empty): no I/O, so QEMU's `query-block` and
    /// `info snapshots` answer while the backend is out of reach.
    pub fn snapshots_in_memory(&self) -> Vec<SnapshotInfo> {
        let st = self.state.read();
        st.snapshots
            .values()
            .map(|s| SnapshotInfo {
                id: s.id,
                name: s.name.clone(),
                secs: s.secs,
                nsecs: s.nsecs,
                virtual_size: s.virtual_size,
                bytes: st.timelines.get(&s.timeline).map(|t| t.blocks).unwrap_or(0) * BLOCK_SIZE,
                vm_state_size: s.vm.size,
                vm_clock_nsec: s.vm.clock_nsec,
                clones: Vec::new(),
                source: s.source.is_some().then(|| SnapshotOrigin {
                    volume_uuid: hex(&s.source.volume_uuid),
                    snapshot_id: s.source.snapshot_id,
                }),
            })
            .collect()
    }
}
