//! HLFS: log-structured virtual-disk volumes with O(1) snapshots and clones.
//!
//! A volume is an append-only log of segments in a backend (a local
//! directory or HDFS). Block maps, the snapshot tree and segment usage
//! are indexed in sled; the log (from its base checkpoint, once the
//! cleaner has retired its first segments) stays the source of truth. See
//! `docs/design.md` and `docs/format.md`.
#![warn(missing_docs)]

pub mod backend;
pub mod buf;
pub mod checkpoint;
pub mod diffstream;
pub mod error;
pub mod ffi;
pub mod format;
pub mod index;
pub mod listing;
pub mod lock;
pub mod log;
pub mod map;
pub mod pipeline;
pub mod registry;
pub mod size;
pub mod state;
pub mod uri;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
pub use format::BLOCK_SIZE;
pub use size::parse_size;
pub use uri::{validate_snapshot_name, VolumeUri};
pub use volume::{
    clone_volume, delete_volume, fsck, release_retired, BackgroundGc, DirSpace, BlockState, Candidate, DuReport, DuView, FlattenReport, FsckReport,
    GcOptions, GcReport, GcThread, OpenOptions, SnapshotInfo, SnapshotOrigin, SpaceInfo, Volume, VolumeInfo,
};
pub use volume::{diff_views, Change, ExportDiffReport, ImportDiffReport};
