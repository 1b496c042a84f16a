//! Access to the console: the token, login sessions in an HttpOnly,
//! SameSite=Strict cookie, and CSRF tokens for every POST.
//!
//! Without a token (allowed on a loopback listener only) every request is
//! let in, and POSTs still carry the process's CSRF token, which another
//! site cannot read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// Name of the session cookie.
pub const COOKIE: &str = "strata_session";
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at most (the oldest go first).
const MAX_SESSIONS: usize = 256;

/// Where the current token comes from (the agent may reload it).
pub type TokenSource = Box<dyn Fn() -> Option<String> + Send + Sync>;

struct Session {
    csrf: String,
    /// BLAKE3 of the token the login used: a changed token ends the session.
    token_hash: [u8; 32],
    expires: Instant,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A browser session (or any caller when no token is set); its CSRF token.
    Browser(String),
    /// `Authorization: Bearer` with the token: a script, no CSRF needed.
    Bearer,
}

/// The console's gatekeeper.
pub struct Access {
    token: TokenSource,
    sessions: Mutex<HashMap<String, Session>>,
    open_csrf: String,
}

/// Compares without an early exit, so timing tells nothing about the token.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Access {
    /// A gatekeeper reading the token from `token`.
    pub fn new(token: TokenSource) -> Access {
        Access {
            token,
            sessions: Mutex::new(HashMap::new()),
            open_csrf: random_hex(),
        }
    }

    /// True when a token is set (a login is needed).
    pub fn protected(&self) -> bool {
        (self.token)().is_some()
    }

    /// The caller, or `None` when it must log in first.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let Some(token) = (self.token)() else {
            return Some(Caller::Browser(self.open_csrf.clone()));
        };
        if let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return same(given.trim().as_bytes(), token.as_bytes()).then_some(Caller::Bearer);
        }
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().expect("sessions");
        let s = sessions.get(id)?;
        if s.expires < Instant::now()
            || !same(&s.token_hash, blake3::hash(token.as_bytes()).as_bytes())
        {
            sessions.remove(id);
            return None;
        }
        Some(Caller::Browser(s.csrf.clone()))
    }

    /// Checks a login; on success returns the `Set-Cookie` value.
    pub fn login(&self, given: &str) -> Option<String> {
        let token = (self.token)()?;
        if !same(given.trim().as_bytes(), token.as_bytes()) {
            return None;
        }
        let id = random_hex();
        let mut sessions = self.sessions.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_hex(),
                token_hash: *blake3::hash(token.as_bytes()).as_bytes(),
                expires: now + SESSION_TTL,
            },
        );
        Some(format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_TTL.as_secs()
        ))
    }

    /// Ends the session of this request; returns a cookie that clears it.
    pub fn logout(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions.lock().expect("sessions").remove(id);
        }
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    }
}

/// True when a POST from `caller` carries the right CSRF token `given`.
pub fn csrf_ok(caller: &Caller, given: Option<&str>) -> bool {
    match caller {
        Caller::Bearer => true,
        Caller::Browser(want) => given.is_some_and(|g| same(g.as_bytes(), want.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn with_cookie(set: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let pair = set.split(';').next().unwrap();
        h.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        h
    }

    #[test]
    fn login_needs_the_token_and_sets_a_strict_http_only_cookie() {
        let a = Access::new(Box::new(|| Some("s3cret".into())));
        assert!(a.caller(&HeaderMap::new()).is_none());
        assert!(a.login("wrong").is_none());
        let set = a.login("s3cret").unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let h = with_cookie(&set);
        let Some(Caller::Browser(csrf)) = a.caller(&h) else {
            panic!("no session")
        };
        assert!(csrf_ok(&Caller::Browser(csrf.clone()), Some(&csrf)));
        assert!(!csrf_ok(&Caller::Browser(csrf), Some("forged")));
        a.logout(&h);
        assert!(a.caller(&h).is_none());
    }

    #[test]
    fn a_changed_token_ends_sessions() {
        let token = Arc::new(Mutex::new(Some("one".to_string())));
        let t = token.clone();
        let a = Access::new(Box::new(move || t.lock().unwrap().clone()));
        let h = with_cookie(&a.login("one").unwrap());
        assert!(a.caller(&h).is_some());
        *token.lock().unwrap() = Some("two".into());
        assert!(a.caller(&h).is_none());
    }

    #[test]
    fn bearer_and_open_modes() {
        let a = Access::new(Box::new(|| Some("tok".into())));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(a.caller(&h), Some(Caller::Bearer));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(a.caller(&h), None);
        let open = Access::new(Box::new(|| None));
        assert!(matches!(
            open.caller(&HeaderMap::new()),
            Some(Caller::Browser(_))
        ));
        assert!(!csrf_ok(&open.caller(&HeaderMap::new()).unwrap(), None));
    }
}
