//! `cofferd`: parse arguments, set up logging, load the config, run the daemon.
//!
//! Exit codes: 0 after a clean shutdown or a valid `--check-config`; 2 for an invalid
//! config or bad arguments; 1 for anything else that stops the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use coffer_daemon::config::{Config, DEFAULT_CONFIG, LogFormat};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The Coffer backup daemon.
#[derive(Parser)]
#[command(name = "cofferd", version)]
struct Args {
    /// Config file.
    #[arg(long, short, env = "COFFER_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Validate the config and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug), which
/// journald reads as the entry's priority when stderr is connected to it.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd the journal adds its own timestamps and reads the priority prefix.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journald) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => {
            let plain = tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false)
                .with_target(false);
            builder.with_ansi(false).event_format(Priority(plain)).init()
        }
        (LogFormat::Text, false) => builder.init(),
    }
}

fn main() -> ExitCode {
    coffer_daemon::memory::tune_allocator();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cofferd: {}", coffer_common::format::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: valid, {} job(s)", config.path.display(), config.jobs.len());
        return ExitCode::SUCCESS;
    }
    init_logging(config.daemon.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cofferd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(coffer_daemon::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cofferd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
