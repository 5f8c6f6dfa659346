//! The command lines of the seed's standalone tools, `snapshot.hlfs` and
//! `clone.hlfs`. They live here rather than in their binaries so that
//! `hlfs completions` and `hlfs generate-man` can describe them too.

use crate::Output;
use clap::{ArgGroup, CommandFactory, Parser};

/// Create, list or delete snapshots of an HLFS volume (same as `hlfs snapshot`)
#[derive(Parser)]
#[command(
    name = "snapshot.hlfs",
    version,
    group(ArgGroup::new("action").required(true).args(["snapshot", "list", "delete"])),
    after_help = "Examples:\n  snapshot.hlfs -u local:///tmp/testenv/testfs -s snapshot1\n  \
        snapshot.hlfs -u local:///tmp/testenv/testfs -l"
)]
pub struct SnapshotArgs {
    /// Volume URI, e.g. local:///tmp/testenv/testfs
    #[arg(short = 'u', long = "uri", value_name = "URI")]
    pub uri: String,
    /// Create a snapshot with this name
    #[arg(short = 's', long = "snapshot", value_name = "NAME")]
    pub snapshot: Option<String>,
    /// List the volume's snapshots
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Delete the snapshot with this name (refused while clones depend on it)
    #[arg(short = 'd', long = "delete", value_name = "NAME")]
    pub delete: Option<String>,
    /// Output format of -l
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Log more to stderr: -v info, -vv debug (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Make a volume an O(1) copy-on-write clone of a snapshot (same as `hlfs clone`)
#[derive(Parser)]
#[command(
    name = "clone.hlfs",
    version,
    after_help = "The son may already exist if it was created and never written.\n\
        Example: clone.hlfs -f local:///tmp/testenv/testfs%snapshot1 -s local:///tmp/testenv/testfs2"
)]
pub struct CloneArgs {
    /// Father: the snapshot to clone, URI%SNAPSHOT
    #[arg(short = 'f', long = "father", value_name = "URI%SNAPSHOT")]
    pub father: String,
    /// Son: the clone to create, a volume URI
    #[arg(short = 's', long = "son", value_name = "URI")]
    pub son: String,
    /// Size of the clone (default: the snapshot's size; may only be larger)
    #[arg(long)]
    pub size: Option<String>,
    /// Log more to stderr: -v info, -vv debug (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `snapshot.hlfs`'s full command line, with the exit-code table of `--help`.
pub fn snapshot_command() -> clap::Command {
    SnapshotArgs::command().after_long_help(crate::exit_codes_help())
}

/// `clone.hlfs`'s full command line, with the exit-code table of `--help`.
pub fn clone_command() -> clap::Command {
    CloneArgs::command().after_long_help(crate::exit_codes_help())
}
