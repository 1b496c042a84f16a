//! Environment overrides of the config file (12-factor: one image, every
//! secret and endpoint from the environment), applied after the file is read:
//! - `STRATA_AGENT_LISTEN`: `[agent] listen`
//! - `STRATA_AGENT_TOKEN` (the token itself) or `STRATA_AGENT_TOKEN_FILE`:
//!   the bearer token for the HTTP endpoints
//! - `STRATA_HOST`: `[agent] host`
//! - `STRATA_REPO_OPTION_<KEY>`: `[repository] options.<key>` (e.g.
//!   `STRATA_REPO_OPTION_AWS_ENDPOINT`)
//! - `STRATA_POOL_<MEMBER>_URL` and `STRATA_POOL_<MEMBER>_OPTION_<KEY>`: a
//!   pool member's URL and options (member names upper-cased, `-` as `_`)
//! - `STRATA_REPO`, `STRATA_PASSWORD`, `STRATA_PASSWORD_FILE` as for every
//!   command, and each cloud's standard variables (AWS_*, AZURE_*, GOOGLE_*).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use super::ConfigFile;
use super::agent::{AgentConfig, parse_listen};

/// Member names as environment variable parts: upper case, `-` as `_`.
fn env_part(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Applies the `STRATA_REPO_OPTION_<KEY>` overrides (`[repository]
/// options.<key>`): with a config file and without one alike.
pub fn apply_repo_env(file: &mut ConfigFile, all: &BTreeMap<String, String>) {
    for (k, v) in all {
        if let Some(opt) = k.strip_prefix("STRATA_REPO_OPTION_")
            && !opt.is_empty()
        {
            file.repository
                .options
                .insert(opt.to_ascii_lowercase(), v.clone());
        }
    }
}

/// Applies the environment overrides listed in the module docs.
pub fn apply_env(file: &mut ConfigFile) -> Result<()> {
    apply_env_from(
        file,
        &|k| std::env::var(k).ok(),
        &std::env::vars().collect(),
    )
}

/// [`apply_env`] with an explicit environment (for tests).
pub fn apply_env_from(
    file: &mut ConfigFile,
    get: &dyn Fn(&str) -> Option<String>,
    all: &BTreeMap<String, String>,
) -> Result<()> {
    let agent = file.agent.get_or_insert_with(AgentConfig::default);
    if let Some(v) = get("STRATA_AGENT_LISTEN").filter(|v| !v.is_empty()) {
        agent.listen =
            Some(parse_listen(&v).map_err(|e| anyhow::anyhow!("STRATA_AGENT_LISTEN: {e}"))?);
    }
    if let Some(v) = get("STRATA_AGENT_TOKEN").filter(|v| !v.is_empty()) {
        agent.token = Some(v);
    }
    if let Some(v) = get("STRATA_AGENT_TOKEN_FILE").filter(|v| !v.is_empty()) {
        agent.token_file = Some(PathBuf::from(v));
    }
    if let Some(v) = get("STRATA_HOST").filter(|v| !v.is_empty()) {
        agent.host = Some(v);
    }
    apply_repo_env(file, all);
    if let Some(pool) = &mut file.pool {
        for m in &mut pool.members {
            let prefix = format!("STRATA_POOL_{}_", env_part(&m.name));
            if let Some(url) = get(&format!("{prefix}URL")).filter(|v| !v.is_empty()) {
                m.url = url;
            }
            let opt_prefix = format!("{prefix}OPTION_");
            for (k, v) in all {
                if let Some(opt) = k.strip_prefix(&opt_prefix) {
                    m.options.insert(opt.to_ascii_lowercase(), v.clone());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides() {
        let mut f: ConfigFile =
            toml::from_str("[pool]\n[[pool.members]]\nname = \"sea-weed\"\nurl = \"s3://a/b\"\n")
                .unwrap();
        let env: BTreeMap<String, String> = [
            ("STRATA_POOL_SEA_WEED_URL", "s3://c/d"),
            ("STRATA_POOL_SEA_WEED_OPTION_AWS_ENDPOINT", "http://x:1"),
            ("STRATA_AGENT_LISTEN", "0.0.0.0:1234"),
            ("STRATA_AGENT_TOKEN", "sekrit"),
            ("STRATA_REPO_OPTION_AWS_REGION", "eu-west-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        apply_env_from(&mut f, &|k| env.get(k).cloned(), &env).unwrap();
        let m = &f.pool.as_ref().unwrap().members[0];
        assert_eq!(m.url, "s3://c/d");
        assert_eq!(m.options["aws_endpoint"], "http://x:1");
        let a = f.agent.as_ref().unwrap();
        assert_eq!(a.listen.unwrap().0.port(), 1234);
        assert_eq!(a.token.as_deref(), Some("sekrit"));
        assert_eq!(f.repository.options["aws_region"], "eu-west-1");
        let bad: BTreeMap<String, String> =
            [("STRATA_AGENT_LISTEN".to_string(), "nope".to_string())].into();
        assert!(apply_env_from(&mut f, &|k| bad.get(k).cloned(), &bad).is_err());
    }
}
