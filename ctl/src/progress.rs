//! Following a server stream of progress events to its result.
//!
//! On a TTY (stderr) an indicatif bar shows phase and bytes; otherwise each new phase
//! is one plain line on stderr, so logs and pipes stay readable. stdout is kept for
//! the result. [`View`] is that display on its own, for streams of other message
//! types (export, import).

use std::io::IsTerminal;

use coffer_common::proto::{BackupEvent, Progress, backup_event::Event};
use coffer_common::tonic::Streaming;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Failure, Result};

/// Shows the progress events of one run.
pub struct View {
    what: String,
    bar: Option<ProgressBar>,
    last_phase: String,
}

impl View {
    /// A view of the run `what` (the bar's prefix, or each plain line's).
    pub fn new(what: &str) -> View {
        let bar = std::io::stderr().is_terminal().then(|| {
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
            bar
        });
        View {
            what: what.to_owned(),
            bar,
            last_phase: String::new(),
        }
    }

    /// Shows one progress event.
    pub fn show(&mut self, p: &Progress) {
        let phase = p.phase().short_name();
        if let Some(bar) = &self.bar {
            bar.set_message(phase.clone());
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
        } else if phase != self.last_phase {
            let detail = if p.message.is_empty() {
                String::new()
            } else {
                format!(": {}", p.message)
            };
            eprintln!("{}: {phase}{detail}", self.what);
        }
        self.last_phase = phase;
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Reads progress events until the result, which it returns.
pub async fn follow(mut stream: Streaming<BackupEvent>, what: &str) -> Result<Event> {
    let mut view = View::new(what);
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
            Some(Event::Progress(p)) => view.show(&p),
            Some(result) => break Ok(result),
            None => {}
        }
    };
    view.finish();
    result
}
