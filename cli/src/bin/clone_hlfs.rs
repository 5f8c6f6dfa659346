//! `clone.hlfs`: the seed's standalone clone tool, e.g.
//! `clone.hlfs -f local:///tmp/testenv/testfs%snapshot1 -s local:///tmp/testenv/testfs2`.

use clap::FromArgMatches;
use hlfs_cli::{ops, seed::CloneArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = hlfs_cli::seed::clone_command().get_matches();
    let args = CloneArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    hlfs_cli::init_logging("clone.hlfs", args.verbose);
    let res = args
        .size
        .as_deref()
        .map(ops::parse_size)
        .transpose()
        .and_then(|size| ops::clone(&args.father, &args.son, size));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => hlfs_cli::fail("clone.hlfs", &e),
    }
}
