//! `clone.hlfs`: the seed's standalone clone tool, e.g.
//! `clone.hlfs -f local:///tmp/testenv/testfs%snapshot1 -s local:///tmp/testenv/testfs2`.

use clap::{CommandFactory, FromArgMatches, Parser};
use hlfs_cli::ops;
use std::process::ExitCode;

/// Make a volume an O(1) copy-on-write clone of a snapshot (same as `hlfs clone`)
#[derive(Parser)]
#[command(
    name = "clone.hlfs",
    version,
    after_help = "The son may already exist if it was created and never written.\n\
        Example: clone.hlfs -f local:///tmp/testenv/testfs%snapshot1 -s local:///tmp/testenv/testfs2"
)]
struct Args {
    /// Father: the snapshot to clone, URI%SNAPSHOT
    #[arg(short = 'f', long = "father", value_name = "URI%SNAPSHOT")]
    father: String,
    /// Son: the clone to create, a volume URI
    #[arg(short = 's', long = "son", value_name = "URI")]
    son: String,
    /// Size of the clone (default: the snapshot's size; may only be larger)
    #[arg(long)]
    size: Option<String>,
    /// Log more to stderr: -v info, -vv debug (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let matches = Args::command().after_long_help(hlfs_cli::exit_codes_help()).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
