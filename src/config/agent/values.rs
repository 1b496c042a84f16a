//! The value types of the agent's config that check themselves while the
//! file is read: listen addresses, percentages, sizes and one-or-many lists.

use std::net::SocketAddr;

use serde::Deserialize;

/// A socket address, checked when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `HOST:PORT` with a numeric host, e.g. `0.0.0.0:9898` or `[::]:9898`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    s.trim().parse().map(ListenAddr).map_err(|_| {
        format!("invalid listen address {s:?}: write an IP and a port, e.g. \"0.0.0.0:9898\"")
    })
}

/// A percentage written as `"5%"` or `5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let v = match Raw::deserialize(d)? {
            Raw::Text(s) => s.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
            Raw::Int(i) => Some(i as f64),
            Raw::Float(f) => Some(f),
        };
        match v {
            Some(p) if (0.0..=100.0).contains(&p) => Ok(Percent(p)),
            _ => Err(serde::de::Error::custom(
                "expected a percentage from 0 to 100, e.g. \"5%\"",
            )),
        }
    }
}

/// A value written either alone or as a list: `"x"` or `["x", "y"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Many(Vec<T>),
            One(T),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Many(v)) => Ok(OneOrMany(v)),
            Ok(Raw::One(v)) => Ok(OneOrMany(vec![v])),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or a list of strings",
            )),
        }
    }
}

/// A size in bytes, written as `"10MiB"`, `"500k"` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => crate::report::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
            Ok(Raw::Int(i)) if i >= 0 => Ok(Size(i as u64)),
            _ => Err(serde::de::Error::custom(
                "expected a size such as \"10MiB\" or a number of bytes",
            )),
        }
    }
}
