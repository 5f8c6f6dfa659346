//! Exit codes and error lines: the one place that maps errors to codes.

use hlfs::ErrorKind;
use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// Any failure without a more specific code (I/O, unsupported, read-only, no space).
pub const FAILURE: u8 = 1;
/// Bad arguments: unknown option, malformed URI, size or snapshot name.
pub const USAGE: u8 = 2;
/// A volume, snapshot or file does not exist.
pub const NOT_FOUND: u8 = 3;
/// The volume is open read-write by another process.
pub const LOCKED: u8 = 4;
/// Data failed verification.
pub const CORRUPT: u8 = 5;
/// Something still depends on the target (clones of a snapshot or volume).
pub const IN_USE: u8 = 6;
/// The volume, snapshot or file already exists.
pub const EXISTS: u8 = 7;

/// Every exit code with its meaning, as `--help` shows it.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (OK, "success"),
    (FAILURE, "other failure (I/O error, unsupported operation, no space)"),
    (USAGE, "usage error: bad option, volume URI, size or snapshot name"),
    (NOT_FOUND, "not found: volume, snapshot or file does not exist"),
    (LOCKED, "locked: the volume is open read-write by another process"),
    (CORRUPT, "corrupt: data failed verification (also: fsck found errors)"),
    (IN_USE, "in use: clones still depend on the snapshot or volume"),
    (EXISTS, "exists: the volume, snapshot or file already exists"),
];

/// The exit code for an engine error kind.
pub fn code_for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Locked => LOCKED,
        ErrorKind::Corrupt => CORRUPT,
        ErrorKind::InUse => IN_USE,
        ErrorKind::Exists => EXISTS,
        _ => FAILURE,
    }
}

/// The exit code for an error: the first engine error in its chain decides;
/// failing that, a plain I/O error (on a raw image file) is classified.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<hlfs::Error>() {
            return code_for_kind(e.kind());
        }
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return match e.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                std::io::ErrorKind::AlreadyExists => EXISTS,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

/// The error as one line: contexts and causes joined by ": ".
///
/// An engine error's text already ends with its I/O cause, so the chain
/// stops there instead of printing that cause twice.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        if cause.is::<hlfs::Error>() {
            break;
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Prints `PROG: error: MESSAGE` to stderr and returns the exit code.
pub fn fail(prog: &str, err: &anyhow::Error) -> ExitCode {
    eprintln!("{prog}: error: {}", error_line(err));
    ExitCode::from(exit_code(err))
}

/// The exit-code table for `--help`.
pub fn exit_codes_help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (code, what) in EXIT_CODES {
        s.push_str(&format!("  {code}  {what}\n"));
    }
    s.push_str("\nErrors are printed to stderr as one line: `hlfs: error: MESSAGE`. Logs go to stderr too\n");
    s.push_str("(level warn; -v for info, -vv for debug; RUST_LOG overrides), so stdout carries only results.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_listed() {
        // Property: each code appears once in the table, so --help documents
        // exactly what the mapping returns.
        let mut seen = std::collections::HashSet::new();
        for (c, _) in EXIT_CODES {
            assert!(seen.insert(*c), "code {c} listed twice");
        }
        for k in [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::Locked,
            ErrorKind::Corrupt,
            ErrorKind::InUse,
            ErrorKind::Exists,
            ErrorKind::Backend,
        ] {
            assert!(seen.contains(&code_for_kind(k)), "{k:?}");
        }
    }

    #[test]
    fn engine_error_found_behind_context_and_printed_once() {
        // Property: context added by the CLI does not hide the engine's kind,
        // and an engine error's I/O cause is not repeated.
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(hlfs::Error::io("reading segment 1", io)).context("exporting v");
        assert_eq!(exit_code(&e), FAILURE);
        assert_eq!(error_line(&e), "exporting v: reading segment 1: disk on fire");
        let e = anyhow::Error::new(hlfs::Error::new(ErrorKind::Locked, "busy")).context("x");
        assert_eq!(exit_code(&e), LOCKED);
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound)).context("opening raw");
        assert_eq!(exit_code(&e), NOT_FOUND);
    }
}
