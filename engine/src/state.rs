//! The small, structural part of a volume's metadata: timelines, snapshots,
//! base reference and counters. It is applied from log records, kept in
//! memory, and saved whole in the sled index and in checkpoints.

use crate::error::{corrupt, Result};
use crate::format::{BaseRef, Dec, Enc, SnapshotSource, VmStateRef};
use std::collections::BTreeMap;

/// A timeline: a sequence of writes on top of its parent's frozen state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Parent timeline (frozen), if any.
    pub parent: Option<u64>,
    /// Map entries (data and zero) this timeline holds.
    pub entries: u64,
    /// Data blocks this timeline holds.
    pub blocks: u64,
}

/// A named snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Unique, increasing id.
    pub id: u64,
    /// Name (validated).
    pub name: String,
    /// The frozen timeline holding the snapshot's own writes.
    pub timeline: u64,
    /// Creation time, seconds since the epoch.
    pub secs: u64,
    /// Creation time, nanoseconds.
    pub nsecs: u32,
    /// Virtual size at snapshot time.
    pub virtual_size: u64,
    /// The VM state saved with it (`savevm`), if any.
    pub vm: VmStateRef,
    /// The source volume's snapshot it reproduces, if `import-diff` took it.
    pub source: SnapshotSource,
}

/// Structural metadata of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolState {
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Current virtual size of the head.
    pub virtual_size: u64,
    /// Creation time.
    pub created: u64,
    /// The writable timeline.
    pub head: u64,
    /// Every live timeline.
    pub timelines: BTreeMap<u64, Timeline>,
    /// Snapshots by id.
    pub snapshots: BTreeMap<u64, SnapshotMeta>,
    /// Base snapshot for clones.
    pub base: Option<BaseRef>,
    /// Next timeline id to hand out.
    pub next_timeline: u64,
    /// Next snapshot id to hand out.
    pub next_snapshot: u64,
    /// Live bytes per segment (blocks some timeline still maps).
    pub seg_live: BTreeMap<u64, u64>,
    /// Whether the head was resized since it started (with no writes, the
    /// head then still differs from the state it branched from).
    pub head_resized: bool,
    /// Whether the cleaner has retired segments: the log then no longer
    /// starts at segment 1, and checkpoints are its base. Kept only in
    /// checkpoints (and the index), which the cleaner writes before it
    /// retires anything. Encoded as an optional trailing byte.
    pub cleaned: bool,
    /// The timeline of a VM state stream being saved that no snapshot has
    /// claimed yet (`Record::VmState`), 0 for none.
    pub vm_pending: u64,
}

const STATE_MAGIC: &[u8; 4] = b"HLFS";
/// Version 2 added each snapshot's VM state and `vm_pending`; version 3
/// each snapshot's source (`import-diff`). Version 3 is written only when
/// some snapshot has a source, so volumes that never imported a diff stay
/// readable by engines that know only version 2; versions 1 and 2 are read.
const STATE_VERSION: u8 = 3;

impl VolState {
    /// Timelines from `tl` up to the root, nearest first.
    pub fn chain(&self, tl: u64) -> Vec<u64> {
        let mut out = vec![tl];
        let mut cur = tl;
        while let Some(p) = self.timelines.get(&cur).and_then(|t| t.parent) {
            out.push(p);
            cur = p;
        }
        out
    }

    /// Looks a snapshot up by name.
    pub fn snapshot_by_name(&self, name: &str) -> Option<&SnapshotMeta> {
        self.snapshots.values().find(|s| s.name == name)
    }

    /// Whether `tl` is the head, a snapshot's timeline, a snapshot's VM
    /// state or the VM state being saved.
    pub fn is_referenced(&self, tl: u64) -> bool {
        tl == self.head
            || (tl == self.vm_pending && tl != 0)
            || self.snapshots.values().any(|s| s.timeline == tl || s.vm.timeline == tl)
    }

    /// Children of `tl`.
    pub fn children(&self, tl: u64) -> Vec<u64> {
        self.timelines
            .iter()
            .filter(|(_, t)| t.parent == Some(tl))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Encodes the whole state.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        let v = if self.snapshots.values().any(|s| s.source.is_some()) { STATE_VERSION } else { 2 };
        e.bytes(STATE_MAGIC).u8(v);
        e.bytes(&self.uuid)
            .u64(self.virtual_size)
            .u64(self.created)
            .u64(self.head);
        e.u64(self.next_timeline).u64(self.next_snapshot);
        e.u32(self.timelines.len() as u32);
        for (id, t) in &self.timelines {
            e.u64(*id)
                .u64(t.parent.unwrap_or(0))
                .u64(t.entries)
                .u64(t.blocks);
        }
        e.u32(self.snapshots.len() as u32);
        for s in self.snapshots.values() {
            e.u64(s.id)
                .u64(s.timeline)
                .u64(s.secs)
                .u32(s.nsecs)
                .u64(s.virtual_size)
                .str(&s.name)
                .u64(s.vm.timeline)
                .u64(s.vm.size)
                .u64(s.vm.clock_nsec);
            if v >= 3 {
                e.bytes(&s.source.volume_uuid).u64(s.source.snapshot_id);
            }
        }
        match &self.base {
            None => {
                e.u8(0);
            }
            Some(b) => {
                e.u8(1)
                    .str(&b.uri)
                    .str(&b.snapshot)
                    .u64(b.snapshot_id)
                    .bytes(&b.volume_uuid);
            }
        }
        e.u32(self.seg_live.len() as u32);
        for (s, n) in &self.seg_live {
            e.u64(*s).u64(*n);
        }
        e.u8(self.head_resized as u8);
        e.u64(self.vm_pending);
        if self.cleaned {
            e.u8(1);
        }
        e.0
    }

    /// Decodes a state written by `encode`.
    pub fn decode(b: &[u8]) -> Result<VolState> {
        let mut d = Dec::new(b, "volume state");
        if d.take(4)? != STATE_MAGIC {
            return Err(corrupt("volume state has a bad magic"));
        }
        let v = d.u8()?;
        if !(1..=STATE_VERSION).contains(&v) {
            return Err(corrupt(format!(
                "volume state version {v} is not supported"
            )));
        }
        let mut st = VolState {
            uuid: d.uuid()?,
            virtual_size: d.u64()?,
            created: d.u64()?,
            head: d.u64()?,
            next_timeline: d.u64()?,
            next_snapshot: d.u64()?,
            ..Default::default()
        };
        for _ in 0..d.u32()? {
            let id = d.u64()?;
            let parent = d.u64()?;
            let t = Timeline {
                parent: (parent != 0).then_some(parent),
                entries: d.u64()?,
                blocks: d.u64()?,
            };
            st.timelines.insert(id, t);
        }
        for _ in 0..d.u32()? {
            let id = d.u64()?;
            let timeline = d.u64()?;
            let secs = d.u64()?;
            let nsecs = d.u32()?;
            let virtual_size = d.u64()?;
            let name = d.str()?;
            let vm = if v >= 2 {
                VmStateRef { timeline: d.u64()?, size: d.u64()?, clock_nsec: d.u64()? }
            } else {
                VmStateRef::default()
            };
            let source = if v >= 3 { SnapshotSource::decode(&mut d)? } else { SnapshotSource::default() };
            st.snapshots.insert(
                id,
                SnapshotMeta {
                    id,
                    name,
                    timeline,
                    secs,
                    nsecs,
                    virtual_size,
                    vm,
                    source,
                },
            );
        }
        if d.u8()? == 1 {
            st.base = Some(BaseRef {
                uri: d.str()?,
                snapshot: d.str()?,
                snapshot_id: d.u64()?,
                volume_uuid: d.uuid()?,
            });
        }
        for _ in 0..d.u32()? {
            let s = d.u64()?;
            st.seg_live.insert(s, d.u64()?);
        }
        st.head_resized = d.u8()? != 0;
        if v >= 2 {
            st.vm_pending = d.u64()?;
        }
        if d.remaining() == 1 {
            st.cleaned = match d.u8()? {
                1 => true,
                v => return Err(corrupt(format!("volume state has a bad cleaned flag {v}"))),
            };
        }
        if d.remaining() != 0 {
            return Err(corrupt("volume state has trailing bytes"));
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip() {
        let mut st = VolState {
            uuid: [3; 16],
            virtual_size: 1 << 30,
            head: 2,
            next_timeline: 3,
            next_snapshot: 2,
            ..Default::default()
        };
        st.timelines.insert(
            1,
            Timeline {
                parent: None,
                entries: 5,
                blocks: 4,
            },
        );
        st.timelines.insert(
            2,
            Timeline {
                parent: Some(1),
                entries: 0,
                blocks: 0,
            },
        );
        st.snapshots.insert(
            1,
            SnapshotMeta {
                id: 1,
                name: "s".into(),
                timeline: 1,
                secs: 9,
                nsecs: 1,
                virtual_size: 1 << 30,
                vm: VmStateRef { timeline: 9, size: 12345, clock_nsec: 77 },
                source: SnapshotSource::default(),
            },
        );
        st.timelines.insert(9, Timeline { parent: None, entries: 4, blocks: 4 });
        st.vm_pending = 11;
        st.timelines.insert(11, Timeline::default());
        st.next_timeline = 12;
        st.base = Some(BaseRef {
            uri: "local:///b".into(),
            snapshot: "x".into(),
            snapshot_id: 4,
            volume_uuid: [1; 16],
        });
        st.seg_live.insert(1, 8192);
        assert_eq!(VolState::decode(&st.encode()).unwrap(), st);
        assert_eq!(st.encode()[4], 2, "no snapshot with a source: version 2, which older engines read");
        st.snapshots.get_mut(&1).unwrap().source = SnapshotSource { volume_uuid: [7; 16], snapshot_id: 5 };
        assert_eq!(st.encode()[4], 3);
        assert_eq!(VolState::decode(&st.encode()).unwrap(), st);
        assert_eq!(st.chain(2), vec![2, 1]);
        assert!(st.is_referenced(9) && st.is_referenced(11), "VM state timelines are referenced");
    }
}
