//! The exporter-toolkit web configuration file (what node_exporter reads
//! with `--web.config.file`), so operators configure TLS, client
//! certificates and basic auth for our servers as for Prometheus' own
//! exporters:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths: to this file's folder
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt
//! ```
//!
//! The YAML is read with PyYAML (a runtime dependency), which keeps a
//! YAML parser out of the wheel; everything else (PEM files, keys, the
//! rustls configuration) is checked here, once, when the file is loaded,
//! so a bad file is an error at construction or at `reload`, never a
//! failing handshake later. Options the toolkit has and we do not
//! (cipher suites, curves, inline certificates, HTTP headers) are refused
//! by name rather than silently ignored.

use super::basic_auth::BasicAuth;
use crate::fork;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio_rustls::TlsAcceptor;

/// One loaded web configuration.
pub struct WebConfig {
    pub tls: Option<TlsAcceptor>,
    /// The client certificate check of `tls`, if it has one: also applied
    /// after a reload to connections whose handshake was made before.
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// The files it was made from (the YAML, certificates, keys, CAs):
    /// watched for changes.
    files: Vec<PathBuf>,
}

/// The configuration a server uses, swapped whole by `reload`: new
/// connections get the new one; a kept-alive connection checks basic auth
/// against it from its next request and is closed after that answer (its
/// TLS was agreed under the old one). The lock is held for an `Arc` clone
/// or swap only, never across an await, and is a `fork::Mutex`: a server
/// thread cannot leave it held in a forked child.
///
/// The files are also watched, as the exporter-toolkit reads its file
/// anew for each connection: at most once a second, on a connection or a
/// request, their sizes and times are compared with those of the last
/// load, and on a change the file is reloaded in the background (a
/// blocking thread, which takes the GIL for PyYAML). A reload that fails
/// keeps the running configuration and is counted; it is tried again when
/// the files change again.
pub struct Security {
    path: PathBuf,
    current: fork::Mutex<Arc<WebConfig>>,
    /// What a reload must also satisfy (the collector's auth rules).
    check: Check,
    epoch: Instant,
    /// Milliseconds since `epoch` before which the files are not looked at.
    next_look_ms: AtomicU64,
    /// Fingerprint of the files as last loaded or seen.
    seen: AtomicU64,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
}

type Check = Box<dyn Fn(&WebConfig) -> PyResult<()> + Send + Sync>;

/// How often the files are looked at, at most.
const LOOK_EVERY_MS: u64 = 1000;

impl Security {
    /// Loads `path`; a Python error naming the file or option if it is
    /// missing, unreadable, or wrong. `check`: what every reload must also
    /// satisfy.
    pub fn load(
        py: Python<'_>,
        path: &str,
        check: impl Fn(&WebConfig) -> PyResult<()> + Send + Sync + 'static,
    ) -> PyResult<Arc<Security>> {
        let path = PathBuf::from(path);
        let config = load(py, &path)?;
        Ok(Arc::new(Security {
            seen: AtomicU64::new(fingerprint(&config.files)),
            path,
            current: fork::Mutex::new(Arc::new(config)),
            check: Box::new(check),
            epoch: Instant::now(),
            next_look_ms: AtomicU64::new(LOOK_EVERY_MS),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        }))
    }

    /// The `stats()` entries of a server with this configuration (or
    /// none: zeros): reloads done and reloads that failed, by call or on a
    /// file change.
    pub fn reload_stats(security: Option<&Security>) -> [(&'static str, u64); 2] {
        let count =
            |c: fn(&Security) -> &AtomicU64| security.map_or(0, |s| c(s).load(Ordering::Relaxed));
        [
            ("web_config_reloads", count(|s| &s.reloads)),
            ("web_config_reload_errors", count(|s| &s.reload_errors)),
        ]
    }

    /// Called by the servers on each connection and request (from the
    /// runtime): at most once a second, looks whether the files changed
    /// and if so reloads them on a blocking thread.
    pub fn watch(self: &Arc<Self>) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_look_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_look_ms
                .compare_exchange(
                    next,
                    now + LOOK_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let files = self.current().files.clone();
        let me = self.clone();
        // stat() and the reload both block: off the async workers.
        tokio::task::spawn_blocking(move || {
            let now = fingerprint(&files);
            if me.seen.swap(now, Ordering::Relaxed) != now {
                // The error (counted) is dropped here, attached: it may
                // hold Python objects, and a drop on this thread would
                // leave them to PyO3's pool (see `crate::interrupt`).
                crate::gil::with_gil_unless_exiting(|py| drop(me.reload(py)));
            }
        });
    }

    pub fn current(&self) -> Arc<WebConfig> {
        self.current.lock().clone()
    }

    pub fn tls(&self) -> bool {
        self.current().tls.is_some()
    }

    /// Reads the file again (new certificates, users); on error the
    /// running configuration stays. Turning TLS on or off needs a restart
    /// (the URL's scheme would change under the clients).
    pub fn reload(&self, py: Python<'_>) -> PyResult<()> {
        let result = self.load_again(py);
        let counter = match result {
            Ok(()) => &self.reloads,
            Err(_) => &self.reload_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn load_again(&self, py: Python<'_>) -> PyResult<()> {
        let fresh = load(py, &self.path)?;
        (self.check)(&fresh)?;
        if fresh.tls.is_some() != self.tls() {
            return Err(PyValueError::new_err(format!(
                "web config {}: reloading cannot turn TLS on or off; restart the server",
                self.path.display()
            )));
        }
        self.seen
            .store(fingerprint(&fresh.files), Ordering::Relaxed);
        let old = std::mem::replace(&mut *self.current.lock(), Arc::new(fresh));
        drop(old); // outside the lock
        Ok(())
    }
}

/// A digest of each file's size, times and inode (a missing file counts
/// too): what changes when a file is rewritten or replaced by a rename.
fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        match std::fs::metadata(f) {
            Ok(m) => (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino(),
            )
                .hash(&mut h),
            Err(_) => u64::MAX.hash(&mut h),
        }
    }
    h.finish()
}

fn bad(path: &Path, why: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("web config {}: {why}", path.display()))
}

pub fn read(what: &str, path: &Path) -> PyResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("cannot read {what} {}: {e}", path.display()),
        ))
    })
}

/// Reads and checks the whole file.
fn load(py: Python<'_>, path: &Path) -> PyResult<WebConfig> {
    let text = read("web config", path)?;
    let text = String::from_utf8(text).map_err(|_| bad(path, "not UTF-8 text"))?;
    let yaml = py
        .import("yaml")
        .map_err(|_| PyValueError::new_err("web_config needs PyYAML: pip install pyyaml"))?;
    let doc = yaml
        .call_method1("safe_load", (text,))
        .map_err(|e| bad(path, format!("not valid YAML: {e}")))?;
    if doc.is_none() {
        return Ok(WebConfig {
            tls: None,
            client_verifier: None,
            basic_auth: None,
            files: vec![path.to_owned()],
        });
    }
    let doc = doc
        .cast::<PyDict>()
        .map_err(|_| bad(path, "must be a mapping at the top level"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = WebConfig {
        tls: None,
        client_verifier: None,
        basic_auth: None,
        files: vec![path.to_owned()],
    };
    for (key, value) in doc.iter() {
        let key: String = key
            .extract()
            .map_err(|_| bad(path, "keys must be strings"))?;
        match key.as_str() {
            "tls_server_config" if value.is_none() => {}
            "tls_server_config" => {
                let section = value
                    .cast::<PyDict>()
                    .map_err(|_| bad(path, "tls_server_config must be a mapping"))?;
                let (tls, verifier) = tls_config(path, base, section, &mut config.files)?;
                config.tls = Some(tls);
                config.client_verifier = verifier;
            }
            "basic_auth_users" if value.is_none() => {}
            "basic_auth_users" => {
                let users = value.cast::<PyDict>().map_err(|_| {
                    bad(
                        path,
                        "basic_auth_users must map user names to bcrypt hashes",
                    )
                })?;
                let mut pairs = Vec::new();
                for (user, hash) in users.iter() {
                    let (Ok(user), Ok(hash)) = (user.extract::<String>(), hash.extract::<String>())
                    else {
                        return Err(bad(
                            path,
                            "basic_auth_users must map user names to bcrypt hashes",
                        ));
                    };
                    pairs.push((user, hash));
                }
                config.basic_auth =
                    Some(Arc::new(BasicAuth::new(pairs).map_err(|e| bad(path, e))?));
            }
            other => {
                return Err(bad(
                    path,
                    format!(
                    "unsupported option {other:?} (supported: tls_server_config, basic_auth_users)"
                ),
                ))
            }
        }
    }
    Ok(config)
}

fn string(path: &Path, section: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<String>> {
    match section.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => match v.cast::<PyString>() {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(bad(
                path,
                format!("tls_server_config.{key} must be a string"),
            )),
        },
    }
}

fn version(path: &Path, name: &str, key: &str) -> PyResult<&'static SupportedProtocolVersion> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        other => Err(bad(
            path,
            format!("tls_server_config.{key} {other:?} is not supported (TLS12 or TLS13)"),
        )),
    }
}

pub fn certificates(what: &str, file: &Path) -> PyResult<Vec<CertificateDer<'static>>> {
    let pem = read(what, file)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PyValueError::new_err(format!("{what} {}: bad PEM: {e}", file.display())))?;
    if certs.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{what} {}: no PEM certificate in it",
            file.display()
        )));
    }
    Ok(certs)
}

/// The TLS side, and its client certificate check if it has one; the
/// files it reads are added to `files`.
fn tls_config(
    path: &Path,
    base: &Path,
    section: &Bound<'_, PyDict>,
    files: &mut Vec<PathBuf>,
) -> PyResult<(TlsAcceptor, Option<Arc<dyn ClientCertVerifier>>)> {
    const KNOWN: [&str; 6] = [
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
    ];
    for key in section.keys() {
        let key: String = key.extract()?;
        if !KNOWN.contains(&key.as_str()) {
            return Err(bad(
                path,
                format!(
                    "unsupported option tls_server_config.{key} (supported: {})",
                    KNOWN.join(", ")
                ),
            ));
        }
    }
    let file = |key: &str| -> PyResult<Option<PathBuf>> {
        Ok(string(path, section, key)?.map(|f| base.join(f)))
    };
    let (Some(cert_file), Some(key_file)) = (file("cert_file")?, file("key_file")?) else {
        return Err(bad(path, "tls_server_config needs cert_file and key_file"));
    };
    files.extend([cert_file.clone(), key_file.clone()]);
    let certs = certificates("cert_file", &cert_file)?;
    let key_pem = read("key_file", &key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        PyValueError::new_err(format!(
            "key_file {}: no usable PEM private key: {e}",
            key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PyValueError::new_err(format!("key_file {}: {e}", key_file.display())))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    if let Err(e) = certified.keys_match() {
        if !matches!(
            e,
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
        ) {
            return Err(PyValueError::new_err(format!(
                "key_file {} does not match cert_file {}: {e}",
                key_file.display(),
                cert_file.display()
            )));
        }
    }
    let min = string(path, section, "min_version")?.unwrap_or_else(|| "TLS12".into());
    let max = string(path, section, "max_version")?.unwrap_or_else(|| "TLS13".into());
    let (min, max) = (
        version(path, &min, "min_version")?,
        version(path, &max, "max_version")?,
    );
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |v: &SupportedProtocolVersion| u16::from(v.version);
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err(bad(
            path,
            "tls_server_config.min_version is above max_version",
        ));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| bad(path, e))?;
    let auth_type =
        string(path, section, "client_auth_type")?.unwrap_or_else(|| "NoClientCert".into());
    let ca_file = file("client_ca_file")?;
    let mut client_verifier = None;
    let builder = match (auth_type.as_str(), ca_file) {
        ("NoClientCert", None) => builder.with_no_client_auth(),
        ("NoClientCert", Some(_)) => {
            return Err(bad(
                path,
                "client_ca_file is set but client_auth_type is NoClientCert (use RequireAndVerifyClientCert or VerifyClientCertIfGiven)",
            ))
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca_file)) => {
            files.push(ca_file.clone());
            let mut roots = RootCertStore::empty();
            for cert in certificates("client_ca_file", &ca_file)? {
                roots.add(cert).map_err(|e| {
                    PyValueError::new_err(format!(
                        "client_ca_file {}: {e}",
                        ca_file.display()
                    ))
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| bad(path, e))?;
            client_verifier = Some(verifier.clone());
            builder.with_client_cert_verifier(verifier)
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(bad(path, format!("client_auth_type {auth_type} needs client_ca_file")))
        }
        (other, _) => {
            return Err(bad(
                path,
                format!("client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"),
            ))
        }
    };
    let mut server =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(server)), client_verifier))
}
