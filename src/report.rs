//! Human-readable figures and machine-readable (`--json`) output.

use serde::Serialize;

/// `1536` → `"1.50 KiB"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Bytes per second, guarding against a zero duration.
pub fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds
    } else {
        0.0
    }
}

/// Where command output goes: human lines, or one JSON object per line.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON lines instead of text.
    pub json: bool,
    /// Suppress human-readable output that is not an error.
    pub quiet: bool,
}

impl Output {
    /// Prints a human line (not in --json or --quiet mode).
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json && !self.quiet {
            println!("{}", s.as_ref());
        }
    }

    /// Prints a JSON object on one line (only in --json mode).
    pub fn json<T: Serialize>(&self, value: &T) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(value).expect("serializable output")
            );
        }
    }

    /// Reports a problem on stderr (as a JSON line on stdout in --json mode).
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.json {
            self.json(&serde_json::json!({"message_type": "warning", "message": msg.as_ref()}));
        } else {
            eprintln!("warning: {}", msg.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_bytes() {
        assert_eq!(super::bytes(10), "10 B");
        assert_eq!(super::bytes(1536), "1.50 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
