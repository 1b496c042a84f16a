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

/// Parses a size such as `10MiB`, `500k`, `1.5 GiB` or `4096`: a number and
/// an optional unit, case-insensitive, read as `--limit-upload` reads rates:
/// `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` are powers of 1000, `Ki`/`KiB`,
/// `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB` powers of 1024, `B` or none bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {s:?}: write a number and a unit, such as \"10MiB\" or \"500k\"");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let v = num * mult as f64;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v.round() as u64)
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

    #[test]
    fn parses_sizes() {
        use super::parse_size;
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10 mib"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512_000));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in ["", "MiB", "10 parsecs", "-1k", "1e99T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
