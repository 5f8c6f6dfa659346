//! The operations behind every command, shared by `hlfs`, `snapshot.hlfs`
//! and `clone.hlfs`. Results go to stdout; notes and errors to stderr.

use crate::output::{self, Output};
use crate::transfer;
use anyhow::{Context, Result};
use hlfs::{Error, ErrorKind, OpenOptions, Volume, VolumeUri};
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// The path that means stdin (import) or stdout (export).
const STREAM: &str = "-";

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn usage(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::InvalidArgument, msg).into()
}

/// Refuses `vol%snap` where the volume itself is meant: opening a snapshot
/// read-write would revert the volume to it, which is never what a
/// snapshot, resize, import or fsck command asks for.
fn require_volume(uri: &str, what: &str) -> Result<()> {
    let u = VolumeUri::parse(uri)?;
    if let Some(s) = &u.snapshot {
        return Err(usage(format!(
            "{uri} names snapshot {s:?}, but {what} works on the volume itself; give {}",
            u.without_snapshot()
        )));
    }
    Ok(())
}

fn open_rw(uri: &str, what: &str) -> Result<Volume> {
    require_volume(uri, what)?;
    Ok(Volume::open(uri, &OpenOptions::default())?)
}

/// `open_rw` for commands that only append metadata records (snapshot
/// create and delete): no index is opened, so they take the same time at a
/// million mapped blocks as on an empty volume (`OpenOptions::metadata_only`).
fn open_meta(uri: &str, what: &str) -> Result<Volume> {
    require_volume(uri, what)?;
    let opts = OpenOptions { metadata_only: true, ..Default::default() };
    Ok(Volume::open(uri, &opts)?)
}

fn open_ro(uri: &str) -> Result<Volume> {
    Ok(Volume::open(uri, &OpenOptions::read_only())?)
}

/// Parses a size as qemu-img writes it (`10G`, `512M`, `4096`).
pub fn parse_size(s: &str) -> Result<u64> {
    Ok(hlfs::parse_size(s)?)
}

/// Creates a volume of `size`, or with `backing` (`URI%snap`) a clone of
/// that snapshot (`size` then defaults to the snapshot's size).
pub fn create(uri: &str, size: Option<&str>, backing: Option<&str>) -> Result<()> {
    let size = size.map(parse_size).transpose()?;
    match (backing, size) {
        (Some(b), size) => clone(b, uri, size),
        (None, Some(size)) => Ok(Volume::create(uri, size)?),
        (None, None) => Err(usage(format!("no size given for {uri}; write e.g. `hlfs create {uri} 10G`"))),
    }
}

/// Prints what `hlfs info` shows.
pub fn info(uri: &str, out: Output) -> Result<()> {
    let vol = open_ro(uri)?;
    let info = vol.info()?;
    match out {
        Output::Human => print(&output::info_human(&info)),
        Output::Json => print(&output::json(&output::InfoJson::from(&info))),
    }
}

/// Deletes a volume.
pub fn delete(uri: &str) -> Result<()> {
    Ok(hlfs::delete_volume(uri)?)
}

/// Breaks the write lock of a volume whose holder is gone (another host
/// that crashed, or a dead process here). Refuses a holder alive on this host.
pub fn unlock(uri: &str) -> Result<()> {
    require_volume(uri, "unlock")?;
    let u = VolumeUri::parse(uri)?;
    let backend = hlfs::backend::for_uri(&u)?;
    let name = u.without_snapshot().to_string();
    match hlfs::lock::break_lock(&*backend, &u.path, &name)? {
        Some(h) => print(&format!(
            "removed the write lock of {name} held by pid {} on host {}\n",
            h.pid, h.host
        )),
        None => print(&format!("{name} has no write lock\n")),
    }
}

/// Grows a volume to `size`, or by `+size`.
pub fn resize(uri: &str, size: &str) -> Result<()> {
    if let Some(by) = size.strip_prefix('-') {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("cannot shrink {uri} by {by}; HLFS volumes only grow"),
        )
        .into());
    }
    let vol = open_rw(uri, "resize")?;
    let new = match size.strip_prefix('+') {
        Some(delta) => vol
            .size()
            .checked_add(parse_size(delta)?)
            .ok_or_else(|| usage(format!("{uri}: growing by {delta} overflows")))?,
        None => parse_size(size)?,
    };
    vol.resize(new)?;
    vol.close()?;
    Ok(())
}

/// Takes snapshot `name` of the volume.
pub fn snapshot_create(uri: &str, name: &str) -> Result<()> {
    let vol = open_meta(uri, "snapshot create")?;
    vol.snapshot_create(name)?;
    Ok(vol.close()?)
}

/// Prints the volume's snapshots.
pub fn snapshot_list(uri: &str, out: Output) -> Result<()> {
    let vol = open_ro(uri)?;
    let snaps = vol.snapshots()?;
    match out {
        Output::Human => print(&output::snapshots_human(&snaps)),
        Output::Json => {
            let v: Vec<output::SnapshotJson> = snaps.iter().map(output::SnapshotJson::from).collect();
            print(&output::json(&v))
        }
    }
}

/// Deletes snapshot `name`.
pub fn snapshot_delete(uri: &str, name: &str) -> Result<()> {
    let vol = open_meta(uri, "snapshot delete")?;
    vol.snapshot_delete(name)?;
    Ok(vol.close()?)
}

/// Reverts the volume to snapshot `name`. If the head had changes, the
/// engine keeps them as a new snapshot; say which, so nothing seems lost.
pub fn snapshot_revert(uri: &str, name: &str) -> Result<()> {
    let vol = open_rw(uri, "snapshot revert")?;
    let before: Vec<String> = vol.snapshots()?.into_iter().map(|s| s.name).collect();
    vol.snapshot_revert(name)?;
    for s in vol.snapshots()? {
        if !before.contains(&s.name) {
            eprintln!("hlfs: note: the previous contents of {uri} were kept as snapshot {:?}", s.name);
        }
    }
    Ok(vol.close()?)
}

/// Makes `dst` a clone of `src` (`URI%snap`).
pub fn clone(src: &str, dst: &str, size: Option<u64>) -> Result<()> {
    Ok(hlfs::clone_volume(src, dst, size)?)
}

/// Copies a raw image into a volume. A missing volume is created (unless
/// `no_create`) with `size`, or the image's size rounded up to 512 bytes.
/// `-` reads the image from stdin; its size is then unknown, so creating a
/// volume needs `size`.
pub fn import(raw: &Path, uri: &str, no_create: bool, size: Option<&str>) -> Result<transfer::ImportStats> {
    require_volume(uri, "import")?;
    if raw == Path::new(STREAM) {
        return import_stdin(uri, no_create, size);
    }
    let file = std::fs::File::open(raw).with_context(|| format!("cannot open raw image {}", raw.display()))?;
    let raw_len = transfer::raw_len(&file).with_context(|| format!("cannot size raw image {}", raw.display()))?;
    if raw_len == 0 {
        return Err(usage(format!("raw image {} is empty; nothing to import", raw.display())));
    }
    let needed = raw_len.div_ceil(512) * 512;
    let size = size.map(parse_size).transpose()?;
    let created = if no_create {
        false
    } else {
        match Volume::create(uri, size.unwrap_or(needed)) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::Exists => false,
            Err(e) => return Err(e.into()),
        }
    };
    if !created && size.is_some() {
        return Err(size_needs_new_volume(uri));
    }
    let vol = open_rw(uri, "import")?;
    if vol.size() < needed {
        return Err(usage(format!(
            "raw image {} is {raw_len} bytes but {uri} holds only {}; grow it first with `hlfs resize {uri} {needed}`",
            raw.display(),
            vol.size()
        )));
    }
    let pb = transfer::progress_bar(Some(needed), "importing");
    let stats = transfer::import(&file, raw_len, &vol, &pb).with_context(|| format!("importing {} into {uri}", raw.display()));
    pb.finish_and_clear();
    let stats = stats?;
    vol.close()?;
    log_import(&raw.display().to_string(), uri, &stats);
    Ok(stats)
}

fn size_needs_new_volume(uri: &str) -> anyhow::Error {
    Error::new(
        ErrorKind::Exists,
        format!("{uri} already exists, and --size only applies to a volume that import creates; drop --size, or grow it with `hlfs resize`"),
    )
    .into()
}

fn log_import(from: &str, uri: &str, stats: &transfer::ImportStats) {
    tracing::info!(
        "imported {from} into {uri}: {} bytes, of which {} bytes of data, {} zero bytes not stored, {} bytes zeroed",
        stats.raw_bytes,
        stats.data_bytes,
        stats.skipped_zero_bytes,
        stats.zeroed_bytes
    );
}

/// `import - URI`: the image arrives on stdin and is written as it comes.
fn import_stdin(uri: &str, no_create: bool, size: Option<&str>) -> Result<transfer::ImportStats> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(usage(format!("stdin is a terminal; pipe the raw image in, as in `hlfs import - {uri} < disk.raw`")));
    }
    let size = size.map(parse_size).transpose()?;
    let exists = hlfs::listing::is_volume(&VolumeUri::parse(uri)?)?;
    match (exists, size) {
        (true, Some(_)) => return Err(size_needs_new_volume(uri)),
        (false, None) if !no_create => {
            return Err(usage(format!(
                "the size of an image read from stdin is not known in advance; give --size SIZE to create {uri}, \
                 or create it first with `hlfs create {uri} SIZE`"
            )))
        }
        (false, Some(size)) if !no_create => Volume::create(uri, size)?,
        // Missing with -n: opening says it does not exist.
        _ => {}
    }
    let vol = open_rw(uri, "import")?;
    let pb = transfer::progress_bar(None, "importing");
    let stats = transfer::import_stream(&mut stdin.lock(), &vol, &pb).with_context(|| format!("importing stdin into {uri}"));
    pb.finish_and_clear();
    let stats = stats?;
    vol.close()?;
    log_import("stdin", uri, &stats);
    Ok(stats)
}

/// Writes a volume (or `URI%snap`) to a raw image file, sparse where the
/// target is a regular file. `-` writes the whole image to stdout.
pub fn export(uri: &str, raw: &Path) -> Result<transfer::ExportStats> {
    if raw == Path::new(STREAM) {
        return export_stdout(uri);
    }
    let vol = open_ro(uri)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(raw)
        .with_context(|| format!("cannot open {} for writing", raw.display()))?;
    // Regular files are truncated and get holes; a device must be written in full.
    let sparse = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if sparse {
        file.set_len(0).with_context(|| format!("truncating {}", raw.display()))?;
    }
    let pb = transfer::progress_bar(Some(vol.size()), "exporting");
    let stats = transfer::export(&vol, &file, sparse, &pb).with_context(|| format!("exporting {uri} to {}", raw.display()));
    pb.finish_and_clear();
    stats
}

/// `export URI -`: the image goes to stdout, every byte of it.
fn export_stdout(uri: &str) -> Result<transfer::ExportStats> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(usage(format!("stdout is a terminal; redirect the image, as in `hlfs export {uri} - > disk.raw`")));
    }
    let vol = open_ro(uri)?;
    // Write to the descriptor itself: Rust's stdout is line-buffered, which
    // would scan every chunk for newlines.
    let fd = stdout.as_fd().try_clone_to_owned().context("duplicating stdout")?;
    let mut out = std::fs::File::from(fd);
    let pb = transfer::progress_bar(Some(vol.size()), "exporting");
    let stats = transfer::export_stream(&vol, &mut out, &pb).with_context(|| format!("exporting {uri} to stdout"));
    pb.finish_and_clear();
    stats
}

/// Makes `[offset, offset+length)` of a volume (default: all of it) read
/// as zeros. No data is written: the range becomes one zero record (plus
/// zeroed partial blocks at unaligned ends), and the blocks it covered are
/// freed for the cleaner.
pub fn wipe(uri: &str, offset: Option<&str>, length: Option<&str>) -> Result<()> {
    let vol = open_rw(uri, "wipe")?;
    let size = vol.size();
    let off = offset.map(parse_size).transpose()?.unwrap_or(0);
    let len = match length {
        Some(l) => parse_size(l)?,
        None => size.saturating_sub(off),
    };
    for (flag, v) in [("--offset", off), ("--length", len)] {
        if v % 512 != 0 {
            return Err(usage(format!("wipe of {uri}: {flag} {v} is not a multiple of 512 bytes")));
        }
    }
    if off.checked_add(len).map_or(true, |end| end > size) {
        return Err(usage(format!(
            "wipe of {uri} at --offset {off}, --length {len} goes past the end of the volume ({size} bytes)"
        )));
    }
    vol.discard(off, len)?;
    vol.flush()?;
    Ok(vol.close()?)
}

/// Lists the volumes in a directory with their sizes, and the space of the
/// filesystem under it. Nothing is locked: volumes open read-write by a VM
/// are listed too. A volume that cannot be opened is skipped with a warning,
/// so one damaged volume does not hide the others.
pub fn list(dir_uri: &str, out: Output) -> Result<()> {
    let dir = hlfs::listing::list_dir(dir_uri)?;
    let mut vols = Vec::new();
    for u in &dir.volumes {
        match Volume::open(&u.to_string(), &OpenOptions::read_only()).and_then(|v| v.info()) {
            Ok(i) => vols.push((u.volume_name().to_string(), i)),
            // Deleted since the directory was listed.
            Err(e) if e.kind() == ErrorKind::NotFound && !hlfs::listing::is_volume(u).unwrap_or(true) => {}
            Err(e) => tracing::warn!("skipping volume {u}: {e}"),
        }
    }
    let listing = output::ListJson::new(&dir, &vols);
    match out {
        Output::Human => print(&output::list_human(&listing)),
        Output::Json => print(&output::json(&listing)),
    }
}

/// Verifies a volume's log; with `rebuild_index` also rebuilds its index.
/// Errors found make the command fail with the "corrupt" exit code after
/// the report is printed.
pub fn fsck(uri: &str, rebuild_index: bool, out: Output) -> Result<()> {
    require_volume(uri, "fsck")?;
    let rep = hlfs::fsck(uri, rebuild_index)?;
    match out {
        Output::Human => print(&output::fsck_human(uri, &rep))?,
        Output::Json => print(&output::json(&output::FsckJson::new(uri, &rep)))?,
    }
    if !rep.errors.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("fsck found {} error(s) in {uri}; data in the affected records cannot be read", rep.errors.len()),
        )
        .into());
    }
    Ok(())
}

/// Runs a cleaning pass on a volume, with a progress bar on a terminal.
pub fn gc(uri: &str, opts: &hlfs::GcOptions, wait: bool, out: Output) -> Result<()> {
    if !(0.0..=1.0).contains(&opts.max_utilization) {
        return Err(usage(format!(
            "gc of {uri}: --max-utilization {} must be between 0 and 1",
            opts.max_utilization
        )));
    }
    let vol = open_rw(uri, "gc")?;
    let pb = transfer::count_bar("cleaning", "segments");
    let rep = vol.gc(opts, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let mut rep = rep?;
    vol.close()?;
    if wait {
        wait_for_retired(uri, opts.retire_grace_secs, &mut rep)?;
    }
    match out {
        Output::Human => print(&output::gc_human(uri, &rep)),
        Output::Json => print(&output::json(&output::GcJson::new(uri, &rep))),
    }
}

/// `hlfs gc --wait`: polls until no retired segment is left, saying on
/// stderr what it waits for whenever that changes. The volume is closed
/// meanwhile (a VM may start on it).
fn wait_for_retired(uri: &str, grace: u64, rep: &mut hlfs::GcReport) -> Result<()> {
    let count = |r: &hlfs::registry::Release| r.held.iter().map(|h| h.files).sum::<u64>() + r.unaccounted.0;
    // Readers delete what they held themselves once they let go, so count
    // what is gone rather than what this process deleted.
    let (segs0, bytes0) = (count(&rep.retired), rep.retired.waiting_bytes());
    let mut said = String::new();
    while rep.retired.waiting_bytes() > 0 {
        let why = output::release_human(&rep.retired);
        if why != said {
            eprint!("hlfs gc: waiting for retired segments to be deleted:\n{why}");
            said = why;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = hlfs::release_retired(uri, grace)?;
        rep.retired.held = now.held;
        rep.retired.unaccounted = now.unaccounted;
    }
    rep.retired_deleted += segs0;
    rep.retired.deleted += segs0;
    rep.retired.deleted_bytes += bytes0;
    rep.log_bytes_after = rep.log_bytes_after.saturating_sub(bytes0);
    Ok(())
}

/// Prints the space use of each snapshot and of the head (`rbd du`).
pub fn du(uri: &str, out: Output) -> Result<()> {
    let vol = open_ro(uri)?;
    let rep = vol.du()?;
    match out {
        Output::Human => print(&output::du_human(&rep)),
        Output::Json => print(&output::json(&output::DuJson::from(&rep))),
    }
}

/// Copies what a clone still reads from its base into it and drops the
/// base, with a progress bar on a terminal.
pub fn flatten(uri: &str, out: Output) -> Result<()> {
    let vol = open_rw(uri, "flatten")?;
    let pb = transfer::count_bar("flattening", "blocks");
    let rep = vol.flatten(&mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let rep = rep?;
    vol.close()?;
    match out {
        Output::Human => print(&output::flatten_human(uri, &rep)),
        Output::Json => print(&output::json(&output::FlattenJson::new(uri, &rep))),
    }
}
