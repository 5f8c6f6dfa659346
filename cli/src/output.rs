//! How results are shown: human text in qemu-img's style, or JSON with
//! snake_case fields for scripts.

use hlfs::listing::VolumeDir;
use hlfs::uri::Location;
use hlfs::{FsckReport, SnapshotInfo, VolumeInfo};
use serde::Serialize;

/// Output format of a command that reports something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Text for people.
    Human,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// Fields of `--output json`, for `--help`. Keep in step with the structs below.
pub const INFO_JSON_HELP: &str = "\
JSON fields (--output json):
  uri              canonical volume URI (with %snapshot when one was named)
  backend          \"local\", \"hdfs\" or \"mem\"
  uuid             volume UUID, hex
  virtual_size     size the guest sees, bytes
  block_size       mapping unit, bytes (4096)
  allocated_bytes  log bytes: what the log occupies in the backend (segments,
                   checkpoints); it only shrinks when `hlfs gc` cleans it
  live_bytes       bytes of blocks still mapped by the head, a snapshot or a clone
                   (`hlfs du` shows them per snapshot)
  head_bytes       bytes written since the last snapshot
  segments         number of segment files
  created          creation time, UTC, \"YYYY-MM-DD HH:MM:SS\"
  created_sec      creation time, seconds since the epoch
  base             \"URI%snapshot\" this volume was cloned from, or null
  writer           who holds it open read-write (\"pid N on host H\"), or null
  files            the volume directory's bytes by kind: total_bytes (what du -sb,
                   or hdfs dfs -du -s on HDFS, says of the directory), segment_bytes,
                   retired_bytes (cleaned segments not deleted yet), checkpoint_bytes,
                   index_bytes (local index cache), other_bytes
  snapshots        list, oldest first, each with:
    id, name, date (UTC \"YYYY-MM-DD HH:MM:SS\"), date_sec, date_nsec,
    virtual_size, bytes (data this snapshot holds on its own),
    vm_state_size (VM state saved with it by QEMU's savevm; 0 if disk-only),
    vm_clock_nsec (the guest clock then), clones (URIs of volumes cloned from it),
    source (null, or for a snapshot hlfs import-diff took: {volume_uuid, snapshot_id}
    of the source volume's snapshot it reproduces)";

/// Fields of `hlfs list --output json`, for `--help`. Keep in step with [`ListJson`].
pub const LIST_JSON_HELP: &str = "\
JSON fields (--output json):
  uri              canonical directory URI
  backend          \"local\", \"hdfs\" or \"mem\"
  capacity         total bytes of the filesystem holding the directory (statvfs), or null
  available        bytes free there for unprivileged users (statvfs), or null
  volumes          list, sorted by name, each with:
    name             volume name (the directory entry)
    uri              canonical volume URI
    virtual_size     size the guest sees, bytes
    allocated_bytes  bytes the volume's log occupies
    base             \"URI%snapshot\" it was cloned from, or null";

/// A volume in `hlfs list --output json`.
#[derive(Debug, Serialize)]
pub struct ListVolumeJson {
    /// Name within the directory.
    pub name: String,
    /// Canonical URI.
    pub uri: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Bytes in the backend.
    pub allocated_bytes: u64,
    /// Base `URI%snapshot` of a clone.
    pub base: Option<String>,
}

/// `hlfs list --output json`.
#[derive(Debug, Serialize)]
pub struct ListJson {
    /// Canonical directory URI.
    pub uri: String,
    /// Backend kind.
    pub backend: String,
    /// Total bytes of the filesystem, if known.
    pub capacity: Option<u64>,
    /// Free bytes of the filesystem, if known.
    pub available: Option<u64>,
    /// Volumes, sorted by name.
    pub volumes: Vec<ListVolumeJson>,
}

impl ListJson {
    /// The listing of `dir`, with the info of each volume that opened.
    pub fn new(dir: &VolumeDir, vols: &[(String, VolumeInfo)]) -> Self {
        ListJson {
            uri: dir.uri.to_string(),
            backend: match dir.uri.location {
                Location::Local => "local",
                Location::Hdfs { .. } => "hdfs",
                Location::Mem { .. } => "mem",
            }
            .to_string(),
            capacity: dir.capacity,
            available: dir.available,
            volumes: vols
                .iter()
                .map(|(name, i)| ListVolumeJson {
                    name: name.clone(),
                    uri: i.uri.clone(),
                    virtual_size: i.virtual_size,
                    allocated_bytes: i.allocated_bytes,
                    base: i.base.clone(),
                })
                .collect(),
        }
    }
}

/// A snapshot in JSON output.
#[derive(Debug, Serialize)]
pub struct SnapshotJson {
    /// Id, unique within the volume.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Creation time, UTC.
    pub date: String,
    /// Creation time, seconds since the epoch.
    pub date_sec: u64,
    /// Nanoseconds part of the creation time.
    pub date_nsec: u32,
    /// Virtual size when taken.
    pub virtual_size: u64,
    /// Bytes of data the snapshot holds on its own.
    pub bytes: u64,
    /// Bytes of VM state saved with it (QEMU's savevm), 0 if disk-only.
    pub vm_state_size: u64,
    /// The guest clock when that state was saved, nanoseconds.
    pub vm_clock_nsec: u64,
    /// URIs of its clones.
    pub clones: Vec<String>,
    /// For a snapshot that `hlfs import-diff` took: the source volume's
    /// snapshot it reproduces; null otherwise.
    pub source: Option<SnapshotSourceJson>,
}

/// `SnapshotJson::source`.
#[derive(Debug, Serialize)]
pub struct SnapshotSourceJson {
    /// UUID of the source volume (as its `hlfs info` prints it).
    pub volume_uuid: String,
    /// Id of the snapshot in the source volume.
    pub snapshot_id: u64,
}

impl From<&SnapshotInfo> for SnapshotJson {
    fn from(s: &SnapshotInfo) -> Self {
        SnapshotJson {
            id: s.id,
            name: s.name.clone(),
            date: utc(s.secs),
            date_sec: s.secs,
            date_nsec: s.nsecs,
            virtual_size: s.virtual_size,
            bytes: s.bytes,
            vm_state_size: s.vm_state_size,
            vm_clock_nsec: s.vm_clock_nsec,
            clones: s.clones.clone(),
            source: s.source.as_ref().map(|o| SnapshotSourceJson {
                volume_uuid: o.volume_uuid.clone(),
                snapshot_id: o.snapshot_id,
            }),
        }
    }
}

/// `hlfs info --output json`.
#[derive(Debug, Serialize)]
pub struct InfoJson {
    /// Canonical URI.
    pub uri: String,
    /// Backend kind.
    pub backend: String,
    /// Volume UUID.
    pub uuid: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Mapping unit in bytes.
    pub block_size: u64,
    /// Bytes in the backend.
    pub allocated_bytes: u64,
    /// Bytes still mapped.
    pub live_bytes: u64,
    /// Bytes written since the last snapshot.
    pub head_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Creation time, UTC.
    pub created: String,
    /// Creation time, seconds since the epoch.
    pub created_sec: u64,
    /// Base `URI%snapshot` of a clone.
    pub base: Option<String>,
    /// Holder of the write lock.
    pub writer: Option<String>,
    /// The volume directory's files by kind.
    pub files: FilesJson,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotJson>,
}

impl From<&VolumeInfo> for InfoJson {
    fn from(i: &VolumeInfo) -> Self {
        InfoJson {
            uri: i.uri.clone(),
            backend: i.backend.clone(),
            uuid: i.uuid.clone(),
            virtual_size: i.virtual_size,
            block_size: i.block_size,
            allocated_bytes: i.allocated_bytes,
            live_bytes: i.live_bytes,
            head_bytes: i.head_bytes,
            segments: i.segments,
            created: utc(i.created),
            created_sec: i.created,
            base: i.base.clone(),
            writer: i.writer.clone(),
            files: FilesJson::from(&i.space),
            snapshots: i.snapshots.iter().map(SnapshotJson::from).collect(),
        }
    }
}

/// The volume directory's files by kind (`hlfs info`, `hlfs du`).
#[derive(Debug, Serialize)]
pub struct FilesJson {
    /// Everything: what `du -sb` (local) or `hdfs dfs -du -s` (HDFS) says.
    pub total_bytes: u64,
    /// Segment files of the log.
    pub segment_bytes: u64,
    /// Retired segments not deleted yet (`hlfs gc` says what holds them).
    pub retired_bytes: u64,
    /// Checkpoints.
    pub checkpoint_bytes: u64,
    /// The local index cache kept in the volume directory.
    pub index_bytes: u64,
    /// Directories, the lock, reader registrations.
    pub other_bytes: u64,
}

impl From<&hlfs::DirSpace> for FilesJson {
    fn from(d: &hlfs::DirSpace) -> Self {
        FilesJson {
            total_bytes: d.total,
            segment_bytes: d.segments,
            retired_bytes: d.retired,
            checkpoint_bytes: d.checkpoints,
            index_bytes: d.index,
            other_bytes: d.other,
        }
    }
}

/// The `files` line of `hlfs info` and `hlfs du` for people.
fn files_human(d: &hlfs::DirSpace) -> String {
    let mut parts = vec![format!("segments {}", size(d.segments))];
    if d.retired > 0 {
        parts.push(format!("retired {} (not deleted yet; `hlfs gc` says why)", size(d.retired)));
    }
    parts.push(format!("checkpoints {}", size(d.checkpoints)));
    if d.index > 0 {
        parts.push(format!("index {}", size(d.index)));
    }
    parts.push(format!("other {}", size(d.other)));
    format!("{} ({}; as du -sb counts)", size_exact(d.total), parts.join(", "))
}

/// `hlfs fsck --output json`.
#[derive(Debug, Serialize)]
pub struct FsckJson {
    /// Volume checked.
    pub uri: String,
    /// True when no errors were found.
    pub clean: bool,
    /// Segments in the log chain.
    pub segments: u64,
    /// Records verified.
    pub records: u64,
    /// Data blocks verified.
    pub data_blocks: u64,
    /// Log bytes verified.
    pub bytes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Problems that make data unreadable.
    pub errors: Vec<String>,
    /// Harmless findings.
    pub notes: Vec<String>,
    /// Whether the index was rebuilt from the log.
    pub rebuilt_index: bool,
}

impl FsckJson {
    /// The report of checking `uri`.
    pub fn new(uri: &str, r: &FsckReport) -> Self {
        FsckJson {
            uri: uri.to_string(),
            clean: r.errors.is_empty(),
            segments: r.segments,
            records: r.records,
            data_blocks: r.data_blocks,
            bytes: r.bytes,
            checkpoints: r.checkpoints,
            errors: r.errors.clone(),
            notes: r.notes.clone(),
            rebuilt_index: r.rebuilt_index,
        }
    }
}

/// Pretty JSON with a final newline.
pub fn json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("plain structs always serialize");
    s.push('\n');
    s
}

/// Seconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`, as `qemu-img snapshot -l` shows dates.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A byte count as qemu-img prints it: `512 B`, `1.5 MiB`, `10 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes} B");
    }
    // Three significant digits, trailing zeros dropped.
    let prec = if v >= 100.0 { 0 } else if v >= 10.0 { 1 } else { 2 };
    let s = format!("{v:.prec$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s} {}", UNITS[u])
}

fn size_exact(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", size(bytes))
}

/// `hlfs info` for people.
pub fn info_human(i: &VolumeInfo) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k}: {v}\n"));
    line("image", &i.uri);
    line("backend", &i.backend);
    line("uuid", &i.uuid);
    line("virtual size", &size_exact(i.virtual_size));
    // The log only grows until `hlfs gc` cleans it: say which is which.
    line("log bytes", &format!("{} (segments and checkpoints in the backend)", size_exact(i.allocated_bytes)));
    line("live bytes", &format!("{} (blocks the head, snapshots or clones still read; `hlfs du` breaks them down)", size_exact(i.live_bytes)));
    line("head bytes", &size_exact(i.head_bytes));
    line("directory", &files_human(&i.space));
    line("block size", &i.block_size.to_string());
    line("segments", &i.segments.to_string());
    line("created", &utc(i.created));
    line("base", i.base.as_deref().unwrap_or("none"));
    line("writer", i.writer.as_deref().unwrap_or("none"));
    if !i.snapshots.is_empty() {
        s.push_str(&snapshots_human(&i.snapshots));
    }
    s
}

/// A snapshot table in the style of `qemu-img snapshot -l`, dates in UTC.
pub fn snapshots_human(snaps: &[SnapshotInfo]) -> String {
    if snaps.is_empty() {
        return "(no snapshots)\n".to_string();
    }
    // VM SIZE as in qemu-img: the VM state saved with it (savevm), 0 B
    // for a disk-only snapshot; DISK SIZE the volume's size then.
    let header = ["ID", "TAG", "DISK SIZE", "VM SIZE", "BYTES", "DATE (UTC)", "CLONES"];
    let rows: Vec<[String; 7]> = snaps
        .iter()
        .map(|s| {
            let clones = if s.clones.is_empty() { "-".to_string() } else { s.clones.join(",") };
            [
                s.id.to_string(),
                s.name.clone(),
                size(s.virtual_size),
                size(s.vm_state_size),
                size(s.bytes),
                utc(s.secs),
                clones,
            ]
        })
        .collect();
    let mut w = header.map(str::len);
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let fmt_row = |cells: [&str; 7]| {
        // ID and TAG left-aligned, sizes right-aligned, like qemu-img.
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:<w5$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5]
        )
    };
    let mut s = String::from("Snapshot list:\n");
    s.push_str(&fmt_row(header));
    for r in &rows {
        s.push_str(&fmt_row([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]));
    }
    for snap in snaps {
        if let Some(o) = &snap.source {
            s.push_str(&format!(
                "{} was taken by import-diff: it reproduces snapshot id {} of volume {}\n",
                snap.name, o.snapshot_id, o.volume_uuid
            ));
        }
    }
    s
}

/// `hlfs list` for people: a line about the directory, then a table.
pub fn list_human(l: &ListJson) -> String {
    let space = match (l.available, l.capacity) {
        (Some(a), Some(c)) => format!("{} available of {}", size(a), size(c)),
        (Some(a), None) => format!("{} available", size(a)),
        _ => "space unknown".to_string(),
    };
    let mut s = format!("{}: {} volume(s), {space}\n", l.uri, l.volumes.len());
    if l.volumes.is_empty() {
        return s;
    }
    let header = ["NAME", "VIRTUAL SIZE", "ALLOCATED", "BASE"];
    let rows: Vec<[String; 4]> = l
        .volumes
        .iter()
        .map(|v| {
            let base = v.base.clone().unwrap_or_else(|| "-".to_string());
            [v.name.clone(), size(v.virtual_size), size(v.allocated_bytes), base]
        })
        .collect();
    let mut w = header.map(str::len);
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |c: [&str; 4]| {
        format!("{:<w0$}  {:>w1$}  {:>w2$}  {}\n", c[0], c[1], c[2], c[3], w0 = w[0], w1 = w[1], w2 = w[2])
    };
    s.push_str(&line(header));
    for r in &rows {
        s.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    s
}

/// `hlfs fsck` for people.
pub fn fsck_human(uri: &str, r: &FsckReport) -> String {
    let mut s = format!(
        "{uri}: checked {} segment(s), {} record(s), {} data block(s), {} of log, {} checkpoint(s)\n",
        r.segments,
        r.records,
        r.data_blocks,
        size(r.bytes),
        r.checkpoints
    );
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    for e in &r.errors {
        s.push_str(&format!("ERROR: {e}\n"));
    }
    if r.rebuilt_index {
        s.push_str("The index was rebuilt from the log.\n");
    }
    if r.errors.is_empty() {
        s.push_str("No errors were found on the volume.\n");
    } else {
        s.push_str(&format!("{} error(s) were found on the volume.\n", r.errors.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_instants() {
        // Property: epoch seconds format as the UTC calendar date and time.
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn sizes_read_like_qemu_img() {
        // Property: binary units, at most three significant digits.
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10 << 30), "10 GiB");
        assert_eq!(size(200 << 20), "200 MiB");
        assert_eq!(size((10 << 20) + (1 << 19)), "10.5 MiB");
    }
}

/// `hlfs gc --output json`.
#[derive(Debug, Serialize)]
pub struct GcJson {
    /// Volume cleaned.
    pub uri: String,
    /// Segments whose live blocks were copied and which were retired.
    pub segments_cleaned: u64,
    /// Bytes of those segments.
    pub bytes_reclaimed: u64,
    /// Live blocks copied forward.
    pub blocks_copied: u64,
    /// Bytes the copies appended to the log.
    pub bytes_written: u64,
    /// Retired segments deleted by this run.
    pub retired_deleted: u64,
    /// Their bytes: space given back now.
    pub freed_bytes: u64,
    /// Retired segments still held back, by whom.
    pub held: Vec<HeldJson>,
    /// Retired segments no record accounts for, waiting for the grace period.
    pub grace_segments: u64,
    /// Their bytes.
    pub grace_bytes: u64,
    /// When the last of them may go (UTC), or null.
    pub grace_until: Option<String>,
    /// Segment bytes before the pass (retired ones included).
    pub log_bytes_before: u64,
    /// Segment bytes after the pass (retired ones included).
    pub log_bytes_after: u64,
    /// Bytes of live blocks.
    pub live_bytes: u64,
}

/// Retired files a set of readers holds back.
#[derive(Debug, Serialize)]
pub struct HeldJson {
    /// How many retired files (segments and checkpoints).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The readers that may still read them.
    pub readers: Vec<ReaderJson>,
}

/// A registered reader.
#[derive(Debug, Serialize)]
pub struct ReaderJson {
    /// Its process.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// What it reads (`URI` or `URI%snap`).
    pub reads: String,
    /// Whether it lets go by itself within a heartbeat (a snapshot view
    /// loads a new map); else when it closes.
    pub refreshes: bool,
    /// Its heartbeat interval, seconds.
    pub heartbeat_secs: u64,
    /// On another host: counted dead once its heartbeat lapses.
    pub remote: bool,
}

impl From<&hlfs::registry::HeldBy> for HeldJson {
    fn from(h: &hlfs::registry::HeldBy) -> Self {
        HeldJson {
            files: h.files,
            bytes: h.bytes,
            readers: h
                .readers
                .iter()
                .map(|r| ReaderJson {
                    pid: r.pid,
                    host: r.host.clone(),
                    reads: r.what.clone(),
                    refreshes: r.refreshes,
                    heartbeat_secs: r.heartbeat_secs,
                    remote: r.remote,
                })
                .collect(),
        }
    }
}

impl GcJson {
    /// The report of cleaning `uri`.
    pub fn new(uri: &str, r: &hlfs::GcReport) -> Self {
        let rel = &r.retired;
        GcJson {
            uri: uri.to_string(),
            segments_cleaned: r.segments_cleaned,
            bytes_reclaimed: r.bytes_reclaimed,
            blocks_copied: r.blocks_copied,
            bytes_written: r.bytes_written,
            retired_deleted: r.retired_deleted,
            freed_bytes: rel.deleted_bytes,
            held: rel.held.iter().map(HeldJson::from).collect(),
            grace_segments: rel.unaccounted.0,
            grace_bytes: rel.unaccounted.1,
            grace_until: (rel.unaccounted.0 > 0).then(|| utc(rel.unaccounted.2)),
            log_bytes_before: r.log_bytes_before,
            log_bytes_after: r.log_bytes_after,
            live_bytes: r.live_bytes,
        }
    }
}

/// What still holds retired segments back, one line each, for people.
pub fn release_human(rel: &hlfs::registry::Release) -> String {
    let mut s = String::new();
    for h in &rel.held {
        let who: Vec<String> = h
            .readers
            .iter()
            .map(|r| {
                let until = if r.refreshes {
                    format!("it loads a new map within {} s", r.heartbeat_secs)
                } else if r.remote {
                    format!("until it closes, or {} s after its last heartbeat if its host is gone", r.heartbeat_secs * 4)
                } else {
                    "until it closes".to_string()
                };
                format!("pid {} on host {} reading {} ({until})", r.pid, r.host, r.what)
            })
            .collect();
        s.push_str(&format!(
            "held back: {} retired file(s), {}, by {}\n",
            h.files,
            size(h.bytes),
            who.join("; ")
        ));
    }
    if rel.unaccounted.0 > 0 {
        s.push_str(&format!(
            "waiting: {} retired file(s), {}, that no reader record accounts for (an interrupted cleaner, or an older version), until the grace period ends at {} UTC\n",
            rel.unaccounted.0,
            size(rel.unaccounted.1),
            utc(rel.unaccounted.2)
        ));
    }
    s
}

/// Human-readable `hlfs gc` report.
pub fn gc_human(uri: &str, r: &hlfs::GcReport) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = format!(
        "{uri}: cleaned {} segment(s) ({:.1} MiB), copied {} live block(s) ({:.1} MiB written)\n\
         freed now: {} retired file(s) (segments and replaced checkpoints), {:.1} MiB\n",
        r.segments_cleaned,
        mib(r.bytes_reclaimed),
        r.blocks_copied,
        mib(r.bytes_written),
        r.retired_deleted,
        mib(r.retired.deleted_bytes),
    );
    s.push_str(&release_human(&r.retired));
    s.push_str(&format!(
        "log: {:.1} MiB -> {:.1} MiB (retired segments not deleted yet included); live data: {:.1} MiB\n",
        mib(r.log_bytes_before),
        mib(r.log_bytes_after),
        mib(r.live_bytes)
    ));
    s
}

/// Fields of `hlfs du --output json`, for `--help`. Keep in step with [`DuJson`].
pub const DU_JSON_HELP: &str = "\
A block version is exclusive to a snapshot (or the head) when no other snapshot and not the
head reads it, shared when two or more do; unread when none does. Deleting a snapshot frees at
most its exclusive bytes (once `hlfs gc` runs). For a clone, FROM BASE is what each still reads
from its base: what `hlfs flatten` copies. Nothing is locked: works on volumes in use.
Example: hlfs du local:///var/lib/hlfs/vm1

JSON fields (--output json):
  uri                volume URI
  views              snapshots oldest first, then the head, each with:
    name               snapshot name, or null for the head
    id                 snapshot id, or null for the head
    provisioned_bytes  virtual size
    exclusive_bytes    bytes of block versions no other snapshot (or the head) reads
    shared_bytes       bytes of block versions it reads that others read too
    base_bytes         bytes it still reads from the clone's base
  provisioned_bytes  sum of the views' virtual sizes
  exclusive_bytes    sum of the views' exclusive bytes
  shared_bytes       bytes read by two or more views, each counted once
  unread_bytes       bytes still mapped that no view reads
  base               \"URI%snapshot\" of a clone's base, or null
  base_bytes         distinct bytes some view still reads from the base
  log_bytes          bytes of segment files (retired ones awaiting deletion included)
  live_bytes         bytes of blocks still mapped: exclusive + shared + unread
  files              the volume directory's bytes by kind: total_bytes (what du -sb,
                     or hdfs dfs -du -s on HDFS, says), segment_bytes, retired_bytes,
                     checkpoint_bytes, index_bytes, other_bytes";

/// A view in `hlfs du --output json`.
#[derive(Debug, Serialize)]
pub struct DuViewJson {
    /// Snapshot name, or null for the head.
    pub name: Option<String>,
    /// Snapshot id, or null for the head.
    pub id: Option<u64>,
    /// Virtual size.
    pub provisioned_bytes: u64,
    /// Bytes only this view reads.
    pub exclusive_bytes: u64,
    /// Bytes this view reads that others read too.
    pub shared_bytes: u64,
    /// Bytes read from the clone's base.
    pub base_bytes: u64,
}

/// `hlfs du --output json`.
#[derive(Debug, Serialize)]
pub struct DuJson {
    /// Volume.
    pub uri: String,
    /// Snapshots oldest first, then the head.
    pub views: Vec<DuViewJson>,
    /// Sum of virtual sizes.
    pub provisioned_bytes: u64,
    /// Sum of exclusive bytes.
    pub exclusive_bytes: u64,
    /// Distinct shared bytes.
    pub shared_bytes: u64,
    /// Mapped bytes no view reads.
    pub unread_bytes: u64,
    /// Base of a clone.
    pub base: Option<String>,
    /// Distinct bytes read from the base.
    pub base_bytes: u64,
    /// Segment bytes.
    pub log_bytes: u64,
    /// Live bytes.
    pub live_bytes: u64,
    /// The volume directory's files by kind.
    pub files: FilesJson,
}

impl From<&hlfs::DuReport> for DuJson {
    fn from(r: &hlfs::DuReport) -> Self {
        DuJson {
            uri: r.uri.clone(),
            views: r
                .views
                .iter()
                .map(|v| DuViewJson {
                    name: v.snapshot.clone(),
                    id: v.snapshot_id,
                    provisioned_bytes: v.provisioned_bytes,
                    exclusive_bytes: v.exclusive_bytes,
                    shared_bytes: v.shared_bytes,
                    base_bytes: v.base_bytes,
                })
                .collect(),
            provisioned_bytes: r.provisioned_bytes,
            exclusive_bytes: r.exclusive_bytes,
            shared_bytes: r.shared_bytes,
            unread_bytes: r.unread_bytes,
            base: r.base.clone(),
            base_bytes: r.base_bytes,
            log_bytes: r.log_bytes,
            live_bytes: r.live_bytes,
            files: FilesJson::from(&r.files),
        }
    }
}

/// `hlfs du` for people: a table like `rbd du`, then the totals.
pub fn du_human(r: &hlfs::DuReport) -> String {
    let clone = r.base.is_some();
    let mut header = vec!["NAME", "PROVISIONED", "EXCLUSIVE", "SHARED"];
    if clone {
        header.push("FROM BASE");
    }
    let mut rows: Vec<Vec<String>> = r
        .views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.snapshot.clone().unwrap_or_else(|| "<head>".to_string()),
                size(v.provisioned_bytes),
                size(v.exclusive_bytes),
                size(v.shared_bytes),
            ];
            if clone {
                row.push(size(v.base_bytes));
            }
            row
        })
        .collect();
    let mut total = vec![
        "<TOTAL>".to_string(),
        size(r.provisioned_bytes),
        size(r.exclusive_bytes),
        size(r.shared_bytes),
    ];
    if clone {
        total.push(size(r.base_bytes));
    }
    rows.push(total);
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (k, c) in row.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (k, c) in cells.iter().enumerate() {
            if k == 0 {
                s.push_str(&format!("{c:<width$}", width = w[0]));
            } else {
                s.push_str(&format!("  {c:>width$}", width = w[k]));
            }
        }
        s.push('\n');
        s
    };
    let mut s = line(header.clone());
    for row in &rows {
        s.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    s.push_str(&format!(
        "log bytes: {} (segment files, retired ones included); live bytes: {} (mapped blocks{})\n",
        size(r.log_bytes),
        size(r.live_bytes),
        if r.unread_bytes > 0 { format!(", of which {} read by no view", size(r.unread_bytes)) } else { String::new() }
    ));
    if let Some(b) = &r.base {
        s.push_str(&format!("base: {b} ({} still read from it)\n", size(r.base_bytes)));
    }
    s.push_str(&format!("directory: {}\n", files_human(&r.files)));
    s
}

/// `hlfs flatten --output json`.
#[derive(Debug, Serialize)]
pub struct FlattenJson {
    /// Volume flattened.
    pub uri: String,
    /// Base dropped (`URI%snapshot`), or null if it was no clone.
    pub base: Option<String>,
    /// Blocks copied from the base.
    pub blocks_copied: u64,
    /// Bytes copied from the base.
    pub bytes_copied: u64,
    /// Blocks read from the base that held only zeros (not copied).
    pub zero_blocks: u64,
    /// Whether a base reference left by an interrupted flatten was removed.
    pub finished_earlier_flatten: bool,
}

impl FlattenJson {
    /// The report of flattening `uri`.
    pub fn new(uri: &str, r: &hlfs::FlattenReport) -> Self {
        FlattenJson {
            uri: uri.to_string(),
            base: r.base.clone(),
            blocks_copied: r.blocks_copied,
            bytes_copied: r.bytes_copied,
            zero_blocks: r.zero_blocks,
            finished_earlier_flatten: r.finished_earlier_flatten,
        }
    }
}

/// `hlfs flatten` for people.
pub fn flatten_human(uri: &str, r: &hlfs::FlattenReport) -> String {
    match &r.base {
        Some(b) => format!(
            "{uri}: copied {} block(s) ({}) from {b}; it no longer depends on it\n",
            r.blocks_copied,
            size(r.bytes_copied)
        ),
        None if r.finished_earlier_flatten => {
            format!("{uri}: finished an interrupted flatten (removed its reference in the base)\n")
        }
        None => format!("{uri} is not a clone; nothing to flatten\n"),
    }
}
