//! `hlfs diff`, `hlfs export-diff` and `hlfs import-diff`: the changes
//! between snapshots, listed, or carried from one volume to another as a
//! diff stream (docs/format.md §13, docs/backups.md).

use crate::output::Output;
use crate::transfer;
use anyhow::{Context, Result};
use hlfs::{Change, Error, ErrorKind, OpenOptions, Volume, VolumeUri, BLOCK_SIZE};
use serde::Serialize;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// The path that means stdin or stdout.
const STREAM: &str = "-";
/// Buffer of the diff stream's file or pipe.
const IO_BUF: usize = 1 << 20;

/// `hlfs diff --help` after the options: what it reads, examples and the
/// JSON fields.
pub const DIFF_HELP: &str = "\
Only the map entries written since the two views parted are read, so the time grows with the
changes, not with the volume. TO may be on another branch (after a revert): the changes are counted
from their common ancestor. A clone may be compared with its base's snapshots. Blocks that read as
zeros in both are no change. Text: one line per extent, offset and length in bytes, and whether it
holds data or now reads as zeros.

Examples:
  hlfs diff local:///var/lib/hlfs/vm1%monday local:///var/lib/hlfs/vm1%tuesday
  hlfs diff local:///var/lib/hlfs/vm1%monday --output json      # against the head

JSON (--output json): a list, in offset order, of the changed extents, like qemu-img map's:
  start    offset of the extent, bytes
  length   its length, bytes (the last one ends at the volume's size)
  zero     true if it now reads as zeros (discarded or zeroed), false if it holds data
Neighbouring extents of the same kind are merged.";

fn usage(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::InvalidArgument, msg).into()
}

fn open_ro(uri: &str) -> Result<Volume> {
    Ok(Volume::open(uri, &OpenOptions::read_only())?)
}

/// One changed extent, in bytes.
#[derive(Debug, Serialize)]
struct ExtentJson {
    start: u64,
    length: u64,
    zero: bool,
}

fn extent(c: &Change, size: u64) -> ExtentJson {
    let start = c.first_block * BLOCK_SIZE;
    ExtentJson { start, length: ((c.first_block + c.blocks) * BLOCK_SIZE).min(size) - start, zero: c.zero }
}

/// Lists the extents that changed from `from` (`VOL%a`) to `to` (`VOL%b`,
/// or `VOL` for its head; by default the head of `from`'s volume).
pub fn diff(from: &str, to: Option<&str>, out: Output) -> Result<()> {
    let fu = VolumeUri::parse(from)?;
    if fu.snapshot.is_none() {
        return Err(usage(format!(
            "{from} names no snapshot; give the snapshot to compare with, as in `hlfs diff {from}%NAME` (against the \
             head) or `hlfs diff {from}%A {from}%B`"
        )));
    }
    let to_uri = match to {
        Some(t) => t.to_string(),
        None => fu.without_snapshot().to_string(),
    };
    let a = open_ro(from)?;
    let b = open_ro(&to_uri)?;
    let size = b.size();
    let stdout = std::io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut n = 0u64;
    let r = match out {
        Output::Human => {
            writeln!(w, "{:<20} {:<20} Type", "Offset", "Length")?;
            hlfs::diff_views(Some(&a), &b, &mut |c| {
                let e = extent(&c, size);
                writeln!(w, "{:<20} {:<20} {}", e.start, e.length, if e.zero { "zero" } else { "data" })
                    .map_err(|e| Error::io("writing to stdout", e))
            })
        }
        Output::Json => {
            write!(w, "[")?;
            hlfs::diff_views(Some(&a), &b, &mut |c| {
                let s = serde_json::to_string(&extent(&c, size)).expect("serialisable");
                let sep = if n == 0 { "\n  " } else { ",\n  " };
                n += 1;
                write!(w, "{sep}{s}").map_err(|e| Error::io("writing to stdout", e))
            })
            .and_then(|()| writeln!(w, "{}]", if n == 0 { "" } else { "\n" }).map_err(|e| Error::io("writing to stdout", e)))
        }
    };
    r.with_context(|| format!("diff of {from} and {to_uri}"))?;
    w.flush()?;
    Ok(())
}

/// Writes the changes from snapshot `from` (a name; None: a full diff) to
/// `to` (`VOL%b`) into `file`, or to stdout for `-`.
pub fn export_diff(to: &str, file: &Path, from: Option<&str>) -> Result<()> {
    let u = VolumeUri::parse(to)?;
    let vol = u.without_snapshot().to_string();
    if u.snapshot.is_none() {
        return Err(usage(format!(
            "{to} names no snapshot; export-diff carries a snapshot's changes: give {vol}%NAME (take one with \
             `hlfs snapshot create {vol} NAME`)"
        )));
    }
    if let Some(f) = from {
        if f.contains('%') || f.contains("://") {
            return Err(usage(format!("--from {f}: give the snapshot's name alone, as in --from monday")));
        }
        hlfs::validate_snapshot_name(f)?;
    }
    let b = open_ro(to)?;
    let a = from.map(|f| open_ro(&format!("{vol}%{f}"))).transpose()?;
    let what = match from {
        Some(f) => format!("changes from {vol}%{f} to {to}"),
        None => format!("all of {to}"),
    };
    let pb = transfer::progress_bar(Some(0), "exporting diff");
    let mut progress = |done: u64, total: u64| {
        pb.set_length(total * BLOCK_SIZE);
        pb.set_position(done * BLOCK_SIZE);
    };
    let rep = if file == Path::new(STREAM) {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(usage(format!("stdout is a terminal; redirect the diff, as in `hlfs export-diff {to} - > FILE`")));
        }
        // The descriptor itself: Rust's stdout is line-buffered.
        let fd = stdout.as_fd().try_clone_to_owned().context("duplicating stdout")?;
        let mut out = BufWriter::with_capacity(IO_BUF, std::fs::File::from(fd));
        let r = b.export_diff(a.as_ref(), &mut out, &mut progress).with_context(|| format!("exporting {what} to stdout"));
        pb.finish_and_clear();
        r?
    } else {
        let f = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
        let mut out = BufWriter::with_capacity(IO_BUF, f);
        let r = b
            .export_diff(a.as_ref(), &mut out, &mut progress)
            .and_then(|rep| {
                let f = out.into_inner().map_err(|e| Error::io("writing the diff", e.into_error()))?;
                f.sync_all().map_err(|e| Error::io("syncing the diff", e))?;
                Ok(rep)
            })
            .with_context(|| format!("exporting {what} to {}", file.display()));
        pb.finish_and_clear();
        if r.is_err() {
            // A partial diff would only be refused by import-diff later.
            let _ = std::fs::remove_file(file);
        }
        let rep = r?;
        println!(
            "wrote {}: {what}: {} bytes of data, {} bytes zeroed, {} bytes in all",
            file.display(),
            rep.counts.data_blocks * BLOCK_SIZE,
            rep.counts.zero_blocks * BLOCK_SIZE,
            rep.counts.stream_bytes
        );
        rep
    };
    tracing::info!(
        "exported {what}: {} records, {} data blocks, {} zero blocks, {} bytes",
        rep.counts.records,
        rep.counts.data_blocks,
        rep.counts.zero_blocks,
        rep.counts.stream_bytes
    );
    Ok(())
}

/// Applies the diff in `file` (or stdin for `-`) to the volume `uri` and
/// takes the diff's snapshot.
pub fn import_diff(file: &Path, uri: &str) -> Result<()> {
    let u = VolumeUri::parse(uri)?;
    if let Some(s) = &u.snapshot {
        return Err(usage(format!(
            "{uri} names snapshot {s:?}, but import-diff writes the volume itself (and takes the diff's snapshot); give {}",
            u.without_snapshot()
        )));
    }
    let (name, mut input): (String, Box<dyn std::io::Read>) = if file == Path::new(STREAM) {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(usage(format!("stdin is a terminal; pipe the diff in, as in `hlfs import-diff - {uri} < FILE`")));
        }
        ("stdin".into(), Box::new(BufReader::with_capacity(IO_BUF, stdin)))
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open diff {}", file.display()))?;
        (file.display().to_string(), Box::new(BufReader::with_capacity(IO_BUF, f)))
    };
    let vol = Volume::open(uri, &OpenOptions::default())?;
    let pb = transfer::progress_bar(Some(0), "importing diff");
    let r = vol
        .import_diff(&mut input, &mut |done, total| {
            pb.set_length(total * BLOCK_SIZE);
            pb.set_position(done * BLOCK_SIZE);
        })
        .with_context(|| format!("importing the diff from {name} into {uri}"));
    pb.finish_and_clear();
    let rep = r?;
    vol.close()?;
    if rep.already_imported {
        println!("{uri} already has snapshot {:?} from this diff; nothing to do", rep.snapshot);
        return Ok(());
    }
    if rep.discarded_interrupted {
        eprintln!("hlfs: note: discarded the partial changes of an interrupted import-diff into {uri} first");
    }
    println!(
        "imported snapshot {:?} into {uri}{}: {} bytes of data, {} bytes zeroed",
        rep.snapshot,
        rep.from.as_ref().map(|f| format!(" (on top of {f:?})")).unwrap_or_else(|| " (full)".into()),
        rep.counts.data_blocks * BLOCK_SIZE,
        rep.counts.zero_blocks * BLOCK_SIZE
    );
    Ok(())
}
