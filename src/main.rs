//! The `relink` binary: logging, command line, and the exit code. The work
//! is in the library.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser as _;
use relink::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match relink::cli::bad_duration(&err) {
            Some(message) => {
                eprintln!("relink: error: {message}");
                return ExitCode::from(relink::exit::USAGE);
            }
            None => err.exit(),
        },
    };
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("RELINK_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("relink={level},warn")));
    let colour = cli.global.log_format == LogFormat::Text
        && colour_allowed(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    match cli.global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    if matches!(&cli.command, Command::Run(args) if !args.dry_run) {
        one_malloc_arena();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("relink: error: cannot start the async runtime: {err}");
            return ExitCode::from(relink::exit::FATAL);
        }
    };
    runtime.block_on(relink::main(cli))
}

/// A live run's memory in one glibc malloc arena, set before any thread
/// starts. Its chunks are read on one thread and dropped on another, which
/// with glibc's default of an arena per thread leaves every arena holding
/// the freed memory of the largest chunks it ever saw: the peak crept up
/// for the first seconds of a run and ended a third higher (SPEC §11 wants
/// it flat; `make bench` shows it). A live run waits on the server, so one
/// arena costs it nothing; a dry run plans on every core and keeps the
/// default.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before the runtime starts any thread, and M_ARENA_MAX takes any
    // positive number.
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if set == 0 {
        tracing::debug!("mallopt(M_ARENA_MAX, 1) refused; keeping malloc's default arenas");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Colour codes in log lines only for a person at a terminal: never when
/// stderr is a file or a pipe (cron mail, journald, log collectors), and
/// never when `NO_COLOR` is set to anything but the empty string
/// (https://no-color.org).
fn colour_allowed(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.map_or(true, |v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsString::new())));
        assert!(!colour_allowed(true, Some(OsString::from("1"))));
        assert!(!colour_allowed(false, None));
        assert!(!colour_allowed(false, Some(OsString::from("1"))));
    }
}
