//! `basic_auth_users` of the web configuration: bcrypt hashes, checked
//! the way the exporter-toolkit does. A bcrypt costs tens of milliseconds
//! on purpose, so a verified (user, password) is remembered (as a SHA-256
//! digest, one per user) and the next scrape with it costs a hash; any
//! other password pays a bcrypt again, on a blocking thread, one at a time
//! in the process (`gated`).

use crate::fork;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// A bcrypt hash (cost 10) of a password nobody is given.
const UNKNOWN_USER_HASH: &str = "$2b$10$nbOT33s/RxJTEFwt8jQksewlpV8iNr.ZjZ685iPjkS9fA3B/pGs.y";

pub struct BasicAuth {
    hashes: HashMap<String, String>,
    /// user -> digest of the last password verified for them. Bounded by
    /// the users of the file; held only for a lookup or an insert.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

fn digest(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// (user, password) from an `Authorization: Basic ...` value.
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl BasicAuth {
    /// Checks every hash parses as bcrypt; the error names the user.
    pub fn new(users: Vec<(String, String)>) -> Result<Self, String> {
        let mut hashes = HashMap::new();
        for (user, hash) in users {
            if user.contains(':') {
                return Err(format!("basic_auth_users: user name {user:?} contains ':'"));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users: the hash of {user:?} is not a bcrypt hash ($2y$10$...; make one with `htpasswd -nbBC 10 USER PASSWORD`)"
                ));
            }
            hashes.insert(user, hash);
        }
        Ok(Self {
            hashes,
            verified: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, user: &str, digest: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(user)
            .is_some_and(|known| bool::from(known.ct_eq(digest)))
    }

    /// Whether the `Authorization` header (if any) names a user with the
    /// right password. Runs bcrypt off the async workers when the pair is
    /// not cached.
    pub async fn allows(self: &Arc<Self>, header: Option<&[u8]>) -> bool {
        let Some((user, password)) = header.and_then(credentials) else {
            return false;
        };
        // An unknown user pays a bcrypt too (as in the exporter-toolkit),
        // so the time taken does not tell which users exist.
        let (hash, known) = match self.hashes.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (UNKNOWN_USER_HASH.to_owned(), false),
        };
        let d = digest(&user, &password);
        if self.cached(&user, &d) {
            return true;
        }
        let ok = gated(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            verified.insert(user, d);
        }
        ok
    }
}

/// The one permit for a bcrypt, made anew in a forked child (a permit held
/// by a thread of the parent would never come back there).
fn bcrypt_gate() -> Arc<Semaphore> {
    static GATE: fork::Mutex<Option<(u64, Arc<Semaphore>)>> = fork::Mutex::new(None);
    let generation = fork::generation();
    let mut gate = GATE.lock();
    match &*gate {
        Some((g, semaphore)) if *g == generation => semaphore.clone(),
        _ => {
            let semaphore = Arc::new(Semaphore::new(1));
            *gate = Some((generation, semaphore.clone()));
            semaphore
        }
    }
}

/// Runs `work` (a bcrypt) on a blocking thread once no other such work
/// runs in the process, as the exporter-toolkit runs one bcrypt at a time:
/// a flood of wrong passwords then keeps one core busy, not every core and
/// every blocking thread (which scrapes render on). A scraper whose
/// password is cached never waits here; a request that waits is cut at its
/// deadline like any other. The permit moves with the work, so a request
/// cut while its bcrypt runs does not let the next one start beside it.
async fn gated<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let permit = bcrypt_gate().acquire_owned().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_caches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = Arc::new(BasicAuth::new(vec![("prom".into(), hash)]).unwrap());
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let rt = crate::http::runtime::runtime();
        let check = |h: Option<String>| rt.block_on(auth.allows(h.as_deref().map(str::as_bytes)));
        assert!(!check(None));
        assert!(!check(Some(header("prom", "wrong"))));
        assert!(!check(Some(header("other", "secret"))));
        assert!(!check(Some("Bearer abc".into())));
        assert!(check(Some(header("prom", "secret"))));
        assert!(auth.cached("prom", &digest("prom", "secret")));
        assert!(check(Some(header("prom", "secret"))));
        assert!(!check(Some(header("prom", "secret2"))));
    }

    #[test]
    fn one_bcrypt_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static MOST: AtomicUsize = AtomicUsize::new(0);
        let work = || {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MOST.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        };
        crate::http::runtime::runtime().block_on(async {
            let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(gated(work))).collect();
            for task in tasks {
                assert!(task.await.unwrap().is_some());
            }
        });
        assert_eq!(MOST.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cut_caller_keeps_the_permit_until_its_work_ends() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FIRST_STARTED: AtomicBool = AtomicBool::new(false);
        static FIRST_DONE: AtomicBool = AtomicBool::new(false);
        let rt = crate::http::runtime::runtime();
        let second_saw_first_done = rt.block_on(async {
            let first = tokio::spawn(gated(|| {
                FIRST_STARTED.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(200));
                FIRST_DONE.store(true, Ordering::SeqCst);
            }));
            while !FIRST_STARTED.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            // The request is cut (deadline, eviction) while its bcrypt runs.
            first.abort();
            gated(|| FIRST_DONE.load(Ordering::SeqCst)).await.unwrap()
        });
        assert!(second_saw_first_done);
    }

    #[test]
    fn refuses_what_is_not_bcrypt() {
        assert!(BasicAuth::new(vec![("a".into(), "plain".into())]).is_err());
    }
}
