//! `snapshot.hlfs`: the seed's standalone snapshot tool, e.g.
//! `snapshot.hlfs -u local:///tmp/testenv/testfs -s snapshot1`.

use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser};
use hlfs_cli::{ops, Output};
use std::process::ExitCode;

/// Create, list or delete snapshots of an HLFS volume (same as `hlfs snapshot`)
#[derive(Parser)]
#[command(
    name = "snapshot.hlfs",
    version,
    group(ArgGroup::new("action").required(true).args(["snapshot", "list", "delete"])),
    after_help = "Examples:\n  snapshot.hlfs -u local:///tmp/testenv/testfs -s snapshot1\n  \
        snapshot.hlfs -u local:///tmp/testenv/testfs -l"
)]
struct Args {
    /// Volume URI, e.g. local:///tmp/testenv/testfs
    #[arg(short = 'u', long = "uri", value_name = "URI")]
    uri: String,
    /// Create a snapshot with this name
    #[arg(short = 's', long = "snapshot", value_name = "NAME")]
    snapshot: Option<String>,
    /// List the volume's snapshots
    #[arg(short = 'l', long = "list")]
    list: bool,
    /// Delete the snapshot with this name (refused while clones depend on it)
    #[arg(short = 'd', long = "delete", value_name = "NAME")]
    delete: Option<String>,
    /// Output format of -l
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// Log more to stderr: -v info, -vv debug (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let matches = Args::command().after_long_help(hlfs_cli::exit_codes_help()).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    hlfs_cli::init_logging("snapshot.hlfs", args.verbose);
    let res = match (&args.snapshot, &args.delete) {
        (Some(name), _) => ops::snapshot_create(&args.uri, name),
        (_, Some(name)) => ops::snapshot_delete(&args.uri, name),
        _ => ops::snapshot_list(&args.uri, args.output),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => hlfs_cli::fail("snapshot.hlfs", &e),
    }
}
