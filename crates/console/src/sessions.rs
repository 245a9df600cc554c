//! Console sessions: random bearer tokens that stand for a user, kept in
//! memory (a restart signs everyone out, which is safe), and the one-time
//! sign-in link's code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

/// Who a session is: a user name and groups, as the API server's
/// authenticators produce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name, e.g. `system:admin`.
    pub name: String,
    /// The groups, e.g. `system:masters`.
    pub groups: Vec<String>,
}

/// Every session token starts with this, so the API server knows which
/// authenticator to ask.
pub const TOKEN_PREFIX: &str = "r8s-console.";

/// How long a session lasts (a working day, as dashboards' defaults).
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// How long a sign-in link stays usable.
const LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most sessions kept; the oldest goes first (a flood of sign-ins
/// must not grow the server without bound).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    who: Identity,
    expires: Instant,
}

/// The sessions and the current one-time link.
pub struct Sessions {
    admin: Identity,
    rng: SystemRandom,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<String, Session>,
    link: Option<(String, Instant)>,
}

impl Sessions {
    /// Sessions whose one-time link signs in as `admin`.
    pub fn new(admin: Identity) -> Sessions {
        Sessions {
            admin,
            rng: SystemRandom::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn random(&self) -> String {
        let mut b = [0u8; 24];
        // The system's random source does not fail on Linux; if it ever
        // did, a zero token would be guessable, so refuse to go on.
        self.rng
            .fill(&mut b)
            .expect("the system random number generator failed");
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A new one-time link code (the previous one stops working).
    pub fn new_link_code(&self) -> String {
        let code = self.random();
        self.lock().link = Some((code.clone(), Instant::now() + LINK_TTL));
        code
    }

    /// Uses up the one-time link code: a session for the admin, or None
    /// if the code is wrong, used or expired.
    pub fn redeem(&self, code: &str) -> Option<(String, Identity)> {
        let ok = {
            let mut inner = self.lock();
            match &inner.link {
                Some((c, exp)) if constant_time_eq(c, code) && Instant::now() < *exp => {
                    inner.link = None;
                    true
                }
                _ => false,
            }
        };
        ok.then(|| (self.start(self.admin.clone()), self.admin.clone()))
    }

    /// Starts a session for `who`; returns its token.
    pub fn start(&self, who: Identity) -> String {
        let token = format!("{TOKEN_PREFIX}{}", self.random());
        let now = Instant::now();
        let mut inner = self.lock();
        inner.by_token.retain(|_, s| s.expires > now);
        if inner.by_token.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
        {
            inner.by_token.remove(&oldest);
        }
        inner.by_token.insert(
            token.clone(),
            Session {
                who,
                expires: now + SESSION_TTL,
            },
        );
        token
    }

    /// The user behind a session token, if it is valid now.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let inner = self.lock();
        let s = inner.by_token.get(token)?;
        (s.expires > Instant::now()).then(|| s.who.clone())
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.lock().by_token.remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Identity {
        Identity {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
        }
    }

    #[test]
    fn a_link_signs_in_once() {
        let s = Sessions::new(admin());
        let code = s.new_link_code();
        assert!(s.redeem("wrong").is_none());
        let (token, who) = s.redeem(&code).expect("first use signs in");
        assert_eq!(who, admin());
        assert_eq!(s.lookup(&token), Some(admin()));
        assert!(s.redeem(&code).is_none(), "a used link must not work again");
    }

    #[test]
    fn a_new_link_replaces_the_old_one() {
        let s = Sessions::new(admin());
        let old = s.new_link_code();
        let new = s.new_link_code();
        assert!(s.redeem(&old).is_none());
        assert!(s.redeem(&new).is_some());
    }

    #[test]
    fn sign_out_ends_the_session_and_others_are_unknown() {
        let s = Sessions::new(admin());
        let t = s.start(admin());
        assert!(s.lookup("r8s-console.nope").is_none());
        assert!(s.lookup("not-ours").is_none());
        s.remove(&t);
        assert!(s.lookup(&t).is_none());
    }
}
