//! Shell completions (clap_complete) and man pages (clap_mangen), generated
//! from the same clap definitions the tools parse with, so they cannot drift
//! from `--help`. `hlfs completions SHELL` prints a script; the hidden
//! `hlfs generate-man DIR` writes the pages that scripts/build-debs.sh
//! packages.

use clap::Command;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The programs `hlfs completions --program` can describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Program {
    /// The hlfs command
    #[value(name = "hlfs")]
    Hlfs,
    /// The seed's snapshot tool
    #[value(name = "snapshot.hlfs")]
    SnapshotHlfs,
    /// The seed's clone tool
    #[value(name = "clone.hlfs")]
    CloneHlfs,
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completion(shell: clap_complete::Shell, mut cmd: Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes one man page (section 1) per command and per visible subcommand,
/// at any depth, into `dir`: `hlfs.1`, `hlfs-snapshot.1`,
/// `hlfs-snapshot-create.1`, …, `snapshot.hlfs.1`. Returns the files written.
pub fn man_pages(cmds: Vec<Command>, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn one(cmd: Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            one(sub, dir, written)?;
        }
        let source = format!("HLFS {}", env!("CARGO_PKG_VERSION"));
        let man = clap_mangen::Man::new(cmd).source(source).manual("HLFS Manual");
        written.push(man.generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for cmd in cmds {
        let mut cmd = cmd.disable_help_subcommand(true);
        // Names subcommands hlfs-snapshot-create etc. (their display names).
        cmd.build();
        one(cmd, dir, &mut written)?;
    }
    Ok(written)
}
