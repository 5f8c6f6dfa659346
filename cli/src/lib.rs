//! Code shared by the `hlfs` command and the seed's standalone tools
//! (`snapshot.hlfs`, `clone.hlfs`): what each operation does, how results
//! are printed, how errors become exit codes, and raw-image import/export.
//!
//! The binaries only parse arguments and dispatch here, so every tool
//! behaves the same for the same operation.

pub mod diff;
pub mod exit;
pub mod generate;
pub mod ops;
pub mod output;
pub mod seed;
pub mod serve;
pub mod transfer;

pub use exit::{exit_codes_help, fail, EXIT_CODES};
pub use output::Output;

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Sends engine and CLI logs to stderr, so stdout carries only results.
///
/// The default level is `warn`: warnings such as a stale lock being taken
/// over are shown, routine `info` chatter ("created volume …") is not, so
/// scripts see clean output. Each `-v` raises it one level (info, debug,
/// trace); `RUST_LOG` overrides both. Lines read like the error line:
/// `hlfs: warning: MESSAGE`.
pub fn init_logging(prog: &'static str, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LogLine(prog))
        .try_init();
}

/// Formats a log event as `PROG: LEVEL: MESSAGE`.
struct LogLine(&'static str);

impl<S, N> FormatEvent<S, N> for LogLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "{}: {level}: ", self.0)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
