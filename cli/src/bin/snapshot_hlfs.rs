//! `snapshot.hlfs`: the seed's standalone snapshot tool, e.g.
//! `snapshot.hlfs -u local:///tmp/testenv/testfs -s snapshot1`.

use clap::FromArgMatches;
use hlfs_cli::{ops, seed::SnapshotArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = hlfs_cli::seed::snapshot_command().get_matches();
    let args = SnapshotArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
