//! Live progress of a backup or restore: a bar on a terminal, status lines
//! with `--json`, nothing with `-q` or when stderr is not a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::Output;

/// Counters an operation updates as it goes and the display reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files finished.
    pub files: AtomicU64,
    /// Bytes finished (read, skipped as unchanged, or written).
    pub bytes: AtomicU64,
    /// Files expected in all, once known.
    pub total_files: AtomicU64,
    /// Bytes expected in all, once known.
    pub total_bytes: AtomicU64,
    /// Set once the totals are final (a scan finished).
    pub totals_known: AtomicBool,
}

impl Counters {
    /// Adds a finished file of `bytes` bytes.
    pub fn file_done(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets final totals.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.totals_known.store(true, Ordering::Relaxed);
    }
}

/// A running display; stops when finished or dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts showing `counters` for an operation named `verb` ("backup").
    pub fn start(verb: &'static str, counters: Arc<Counters>, out: Output) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if out.quiet {
            None
        } else if out.json {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                json_lines(verb, &counters, &stop)
            }))
        } else if std::io::stderr().is_terminal() {
            let stop = stop.clone();
            Some(std::thread::spawn(move || bar(verb, &counters, &stop)))
        } else {
            None
        };
        Display { stop, thread }
    }

    /// Whether anything is being shown.
    pub fn active(&self) -> bool {
        self.thread.is_some()
    }

    /// Stops and clears the display.
    pub fn finish(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps up to `d`, waking early when asked to stop; returns whether to stop.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.load(Ordering::Relaxed)
}

fn bar(verb: &'static str, c: &Counters, stop: &AtomicBool) {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let known = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}",
    );
    let unknown = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {spinner} {bytes} {binary_bytes_per_sec} {msg}",
    );
    pb.set_prefix(verb);
    if let Ok(s) = &unknown {
        pb.set_style(s.clone());
    }
    let mut styled_known = false;
    while !pause(stop, Duration::from_millis(200)) {
        let (files, bytes) = (
            c.files.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        );
        if c.totals_known.load(Ordering::Relaxed) {
            if !styled_known && let Ok(s) = &known {
                pb.set_style(s.clone());
                styled_known = true;
            }
            let total = c.total_bytes.load(Ordering::Relaxed);
            pb.set_length(total.max(bytes));
            pb.set_message(format!(
                "{files}/{} files",
                c.total_files.load(Ordering::Relaxed)
            ));
        } else {
            pb.set_message(format!("{files} files"));
        }
        pb.set_position(bytes);
    }
    pb.finish_and_clear();
}

fn json_lines(verb: &'static str, c: &Counters, stop: &AtomicBool) {
    let started = Instant::now();
    while !pause(stop, Duration::from_secs(1)) {
        let elapsed = started.elapsed().as_secs_f64();
        let bytes = c.bytes.load(Ordering::Relaxed);
        let known = c.totals_known.load(Ordering::Relaxed);
        let total = c.total_bytes.load(Ordering::Relaxed);
        let rate = crate::report::rate(bytes, elapsed);
        let eta = (known && rate > 0.0 && total > bytes).then(|| (total - bytes) as f64 / rate);
        let line = serde_json::json!({
            "message_type": "status",
            "action": verb,
            "seconds_elapsed": elapsed,
            "files_done": c.files.load(Ordering::Relaxed),
            "bytes_done": bytes,
            "total_files": known.then(|| c.total_files.load(Ordering::Relaxed)),
            "total_bytes": known.then_some(total),
            "bytes_per_second": rate,
            "seconds_remaining": eta,
        });
        println!("{line}");
    }
}
