//! Following a server stream of progress events to its result.
//!
//! On a TTY (stderr) an indicatif bar shows phase and bytes; otherwise each new phase
//! is one plain line on stderr, so logs and pipes stay readable. stdout is kept for
//! the result.

use std::io::IsTerminal;

use coffer_common::proto::{BackupEvent, backup_event::Event};
use coffer_common::tonic::Streaming;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Failure, Result};

/// Reads progress events until the result, which it returns.
pub async fn follow(mut stream: Streaming<BackupEvent>, what: &str) -> Result<Event> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let mut last_phase = String::new();
    let result = loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                break Err(Failure {
                    code: 1,
                    message: "the daemon ended the operation without a result".into(),
                });
            }
            Err(status) => break Err(Failure::from(status)),
        };
        match message.event {
            Some(Event::Progress(p)) => {
                let phase = p.phase().short_name();
                if let Some(bar) = &bar {
                    bar.set_message(phase.clone());
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes_done);
                } else if phase != last_phase {
                    let detail = if p.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.message)
                    };
                    eprintln!("{what}: {phase}{detail}");
                }
                last_phase = phase;
            }
            Some(result) => break Ok(result),
            None => {}
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}
