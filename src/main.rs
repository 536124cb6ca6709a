//! `ringtide [--config FILE] [--override key=value]...` — a drop-in Apache Kafka broker.
//!
//! With no arguments it starts with the embedded defaults: PLAINTEXT on port 9092, data in ./ringtide-data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ringtide",
    version,
    about = "A drop-in Apache Kafka broker, thread-per-core on io_uring"
)]
struct Cli {
    /// A Kafka server.properties file (Kafka's key names).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The config file given as a positional argument, as kafka-server-start takes it.
    #[arg(value_name = "FILE", conflicts_with = "config")]
    config_positional: Option<PathBuf>,
    /// Override one property: key=value. May be repeated; later ones win.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print the effective configuration, with where each value came from, and exit.
    #[arg(long = "print-config")]
    print_config: bool,
}

/// Fail-stop: a panic on any thread (a core's executor included) logs which thread and why, then ends the
/// whole process at once. Serving on with one core dead would hang every request forwarded to it; a
/// supervisor restarts the broker and recovery does the rest.
fn install_fail_stop_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, "fatal: {info}; stopping the broker");
        eprintln!("ringtide: fatal error on thread {name}: {info}; stopping the broker");
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    ringtide::logging::init();
    install_fail_stop_hook();
    let cli = Cli::parse();
    let file = cli.config.or(cli.config_positional);
    let config = match ringtide::config::Config::load(file.as_deref(), &cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringtide: {e}");
            tracing::error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    match ringtide::storage::fault_journal::init() {
        Ok(None) => {}
        Ok(Some(path)) => tracing::warn!(
            journal = path,
            "fault injection: every completed sync is journaled (test only)"
        ),
        Err(e) => {
            eprintln!("ringtide: cannot open the fault-injection sync journal: {e}");
            return ExitCode::from(2);
        }
    }
    match ringtide::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringtide: {e}");
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
