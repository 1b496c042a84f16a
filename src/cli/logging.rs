//! What the library reports through `tracing`, shown to a person running a
//! command: warnings as `warning: …` on stderr (a `warning` JSON line on
//! stdout with `--json`, as the command's own warnings), notes as `note: …`
//! unless `--quiet`, debug lines with `-v`. The agent has its own log format
//! (`cli/agent.rs`).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::report::Output;

/// Routes library events to the command's output.
struct CliLayer {
    out: Output,
    verbose: u8,
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for CliLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let mut line = Line::default();
        event.record(&mut line);
        match level {
            Level::ERROR | Level::WARN => self.out.warn(line.0),
            Level::INFO if !self.out.quiet && !self.out.json => eprintln!("note: {}", line.0),
            Level::DEBUG | Level::TRACE if self.verbose > 0 && !self.out.json => {
                eprintln!("debug: {}", line.0)
            }
            _ => {}
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        metadata.target().starts_with("strata")
            && (*metadata.level() <= Level::INFO || self.verbose > 0)
    }
}

/// Installs the command-line reporting of library events.
pub fn init(out: Output, verbose: u8) {
    let _ = tracing_subscriber::registry()
        .with(CliLayer { out, verbose })
        .try_init();
}
