//! The `relink` binary: logging, command line, and the exit code. The work
//! is in the library.

use std::process::ExitCode;

use clap::Parser;
use relink::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("RELINK_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("relink={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
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
