//! TLS for the NodeReporter's client: which CAs it trusts (a `ca_file`,
//! else the system store) and the client certificate it shows (mutual
//! TLS). Everything is read and checked when the reporter is made, so a
//! wrong file is an error there; a certificate the collector presents
//! and we do not trust is a send failure whose message says so.

use super::web_config::{certificates, read};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Files of a client's TLS configuration.
#[derive(Default)]
pub struct ClientTls<'a> {
    pub ca_file: Option<&'a Path>,
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
}

impl ClientTls<'_> {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    pub fn connector(&self) -> PyResult<TlsConnector> {
        let mut roots = RootCertStore::empty();
        match self.ca_file {
            Some(ca_file) => {
                for cert in certificates("ca_file", ca_file)? {
                    roots.add(cert).map_err(|e| {
                        PyValueError::new_err(format!("ca_file {}: {e}", ca_file.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(PyValueError::new_err(
                        "https:// without ca_file: the system has no CA certificates (install ca-certificates, or give ca_file)",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (self.cert_file, self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert_file), Some(key_file)) => {
                let certs = certificates("client_cert_file", cert_file)?;
                let key = PrivateKeyDer::from_pem_slice(&read("client_key_file", key_file)?)
                    .map_err(|e| {
                        PyValueError::new_err(format!(
                            "client_key_file {}: no usable PEM private key: {e}",
                            key_file.display()
                        ))
                    })?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    PyValueError::new_err(format!(
                        "client_cert_file {} / client_key_file {}: {e}",
                        cert_file.display(),
                        key_file.display()
                    ))
                })?
            }
            _ => {
                return Err(PyValueError::new_err(
                    "client_cert_file and client_key_file go together",
                ))
            }
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }
}
