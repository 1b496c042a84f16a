//! `--compression off|fastest|default|max|<zstd level>`: the zstd level new
//! blobs of a backup are compressed with.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// The highest zstd level `max` stands for (levels above 19 need much more
/// memory to compress, for little gain).
pub const MAX_LEVEL: i32 = 19;

/// A compression setting, as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionSetting {
    /// No compression (level 0).
    Off,
    /// zstd level 1.
    Fastest,
    /// The repository's level (`compression_level` in its config, 3 unless
    /// set at `init`).
    #[default]
    Default,
    /// zstd level 19.
    Max,
    /// A zstd level from -7 (fastest) to 22 (0: no compression).
    Level(i32),
}

impl CompressionSetting {
    /// The zstd level to use, `repo_level` being the repository's default.
    pub fn level(self, repo_level: i32) -> i32 {
        match self {
            CompressionSetting::Off => 0,
            CompressionSetting::Fastest => 1,
            CompressionSetting::Default => repo_level,
            CompressionSetting::Max => MAX_LEVEL,
            CompressionSetting::Level(l) => l,
        }
    }
}

impl FromStr for CompressionSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(CompressionSetting::Off),
            "fastest" => Ok(CompressionSetting::Fastest),
            "default" => Ok(CompressionSetting::Default),
            "max" => Ok(CompressionSetting::Max),
            t => match t.parse::<i32>() {
                Ok(l) if (-7..=22).contains(&l) => Ok(CompressionSetting::Level(l)),
                _ => Err(format!(
                    "invalid compression {s:?}: use off, fastest, default, max or a zstd level from -7 to 22"
                )),
            },
        }
    }
}

impl fmt::Display for CompressionSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionSetting::Off => f.write_str("off"),
            CompressionSetting::Fastest => f.write_str("fastest"),
            CompressionSetting::Default => f.write_str("default"),
            CompressionSetting::Max => f.write_str("max"),
            CompressionSetting::Level(l) => write!(f, "{l}"),
        }
    }
}

impl<'de> Deserialize<'de> for CompressionSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
        }
        let text = match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => s,
            Ok(Raw::Int(i)) => i.to_string(),
            Err(_) => {
                return Err(serde::de::Error::custom(
                    "expected off, fastest, default, max or a zstd level from -7 to 22",
                ));
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_levels() {
        let p = |s: &str| s.parse::<CompressionSetting>();
        assert_eq!(p("off").unwrap().level(3), 0);
        assert_eq!(p("fastest").unwrap().level(3), 1);
        assert_eq!(p("default").unwrap().level(7), 7);
        assert_eq!(p("MAX").unwrap().level(3), 19);
        assert_eq!(p("-7").unwrap().level(3), -7);
        assert_eq!(p("22").unwrap().level(3), 22);
        assert_eq!(p("12").unwrap().to_string(), "12");
        for bad in ["23", "-8", "best", ""] {
            assert!(p(bad).unwrap_err().contains("invalid compression"), "{bad}");
        }
        #[derive(Deserialize)]
        struct T {
            c: CompressionSetting,
        }
        assert_eq!(
            toml::from_str::<T>("c = 5").unwrap().c,
            CompressionSetting::Level(5)
        );
        assert_eq!(
            toml::from_str::<T>("c = \"max\"").unwrap().c,
            CompressionSetting::Max
        );
        assert!(toml::from_str::<T>("c = 99").is_err());
    }
}
