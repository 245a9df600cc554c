//! The cluster PKI: a CA, the API server's serving certificate and the admin
//! client certificate, created on first start and reused afterwards, plus
//! the admin kubeconfig that points at them.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Generating or parsing a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM file held no usable key or certificate.
    #[error("{0}: no usable PEM content")]
    BadPem(PathBuf),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// Paths and contents of the cluster's certificates.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Directory holding the PEM files.
    pub dir: PathBuf,
    /// CA certificate, PEM.
    pub ca_cert_pem: String,
    /// CA key, PEM (kept to sign node and user certificates later).
    pub ca_key_pem: String,
    /// Serving certificate, PEM.
    pub server_cert_pem: String,
    /// Serving key, PEM.
    pub server_key_pem: String,
    /// Admin client certificate (O=system:masters), PEM.
    pub admin_cert_pem: String,
    /// Admin client key, PEM.
    pub admin_key_pem: String,
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file only its owner may read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(contents.as_bytes()).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
    }
    // Rename so a crash never leaves a half-written key behind.
    fs::rename(&tmp, path).map_err(io_err)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl Pki {
    /// Loads the PKI from `dir`, creating whatever is missing. The serving
    /// certificate is re-issued when the requested SANs are not all in it.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        if !ca_cert_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "r8s-ca");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 3650);
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            write_private(&ca_cert_path, &cert.pem())?;
        }
        let ca_cert_pem = read(&ca_cert_path)?;
        let ca_key_pem = read(&ca_key_path)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)?;

        let server_cert_path = dir.join("serving.crt");
        let server_key_path = dir.join("serving.key");
        let sans_path = dir.join("serving.sans");
        let wanted = sans.join(",");
        let have = fs::read_to_string(&sans_path).unwrap_or_default();
        if !server_cert_path.exists() || !server_key_path.exists() || have != wanted {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "kube-apiserver");
            params.distinguished_name = dn;
            for san in sans {
                params.subject_alt_names.push(match san.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(san.clone().try_into()?),
                });
            }
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            validity(&mut params, 365);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&server_key_path, &key.serialize_pem())?;
            write_private(&server_cert_path, &cert.pem())?;
            write_private(&sans_path, &wanted)?;
        }

        let admin_cert_path = dir.join("admin.crt");
        let admin_key_path = dir.join("admin.key");
        if !admin_cert_path.exists() || !admin_key_path.exists() {
            let (cert, key) = issue_client(&issuer, "system:admin", &["system:masters"])?;
            write_private(&admin_key_path, &key)?;
            write_private(&admin_cert_path, &cert)?;
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem,
            ca_key_pem,
            server_cert_pem: read(&server_cert_path)?,
            server_key_pem: read(&server_key_path)?,
            admin_cert_pem: read(&admin_cert_path)?,
            admin_key_pem: read(&admin_key_path)?,
        })
    }

    /// Issues a client certificate for `user` in `groups`, signed by the CA.
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<(String, String), TlsError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &ca_key)?;
        issue_client(&issuer, user, groups)
    }

    /// The rustls server config: our serving certificate, HTTP/2 and
    /// HTTP/1.1 by ALPN, and optional client certificates checked against
    /// the CA (requests without one are anonymous).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in parse_certs(&self.ca_cert_pem, &self.dir.join("ca.crt"))? {
            roots
                .add(ca)
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let certs = parse_certs(&self.server_cert_pem, &self.dir.join("serving.crt"))?;
        let key = parse_key(&self.server_key_pem, &self.dir.join("serving.key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks a client certificate and key offered outside TLS (the web
    /// console's kubeconfig sign-in): the certificate must verify against
    /// the CA exactly as a TLS client's would, and the key must be the
    /// certificate's (holding the key is what a TLS handshake proves).
    /// Returns the user and groups the certificate names.
    pub fn verify_client_pair(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(String, Vec<String>), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in
            parse_certs(&self.ca_cert_pem, &self.dir.join("ca.crt")).map_err(|e| e.to_string())?
        {
            roots.add(ca).map_err(|e| e.to_string())?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
        let certs = parse_certs(cert_pem, Path::new("client-certificate-data"))
            .map_err(|_| "the client certificate is not PEM".to_string())?;
        let (leaf, chain) = certs.split_first().ok_or("no certificate")?;
        verifier
            .verify_client_cert(leaf, chain, rustls::pki_types::UnixTime::now())
            .map_err(|e| format!("the certificate does not verify against the cluster CA: {e}"))?;
        let key =
            KeyPair::from_pem(key_pem).map_err(|_| "the client key is not a PEM private key")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err("the client key does not belong to the certificate".into());
        }
        user_from_cert(leaf).ok_or_else(|| "the certificate names no user".into())
    }

    /// Writes a kubeconfig for the admin user pointing at `server_url`.
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), TlsError> {
        let contents = kubeconfig_text(
            server_url,
            &self.ca_cert_pem,
            "r8s-admin",
            &self.admin_cert_pem,
            &self.admin_key_pem,
        );
        write_private(path, &contents)
    }
}

fn kubeconfig_text(server_url: &str, ca: &str, user: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: r8s\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: r8s\n  context:\n    cluster: r8s\n    user: {user}\n    namespace: default\ncurrent-context: r8s\npreferences: {{}}\n",
        ca = b64(ca),
        cert = b64(cert),
        key = b64(key),
    )
}

/// A kubeconfig for a new user: a client certificate for `user` in
/// `groups` signed by the cluster CA kept in `dir` (only the CA is read;
/// nothing in `dir` changes).
pub fn user_kubeconfig(
    dir: &Path,
    server_url: &str,
    user: &str,
    groups: &[&str],
) -> Result<String, TlsError> {
    let ca_cert_pem = read(&dir.join("ca.crt"))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)?;
    let (cert, key) = issue_client(&issuer, user, groups)?;
    Ok(kubeconfig_text(server_url, &ca_cert_pem, user, &cert, &key))
}

/// Accepts any server certificate while still checking the handshake
/// signatures: for peers whose identity is established otherwise (kubelets,
/// which upstream also does not verify without a kubelet CA; `/cacerts`,
/// whose answer a joining agent checks against its token).
#[derive(Debug)]
pub struct AnyServerCert(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn issue_client(
    issuer: &Issuer<'_, &KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 365);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn parse_certs(pem: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::BadPem(path.to_path_buf()));
    }
    Ok(certs)
}

fn parse_key(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::BadPem(path.to_path_buf()))
}

/// The user a verified client certificate names: CN is the user, each O a
/// group, as upstream's x509 authenticator reads them.
pub fn user_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = Pki::load_or_create(dir.path(), &sans).unwrap();
        let b = Pki::load_or_create(dir.path(), &sans).unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
        a.server_config().unwrap();
        let der = parse_certs(&a.admin_cert_pem, dir.path()).unwrap();
        let (user, groups) = user_from_cert(&der[0]).unwrap();
        let (u, _) = a
            .verify_client_pair(&a.admin_cert_pem, &a.admin_key_pem)
            .unwrap();
        assert_eq!(u, user);
        let other = Pki::load_or_create(tempfile::tempdir().unwrap().path(), &sans).unwrap();
        let e = a
            .verify_client_pair(&other.admin_cert_pem, &other.admin_key_pem)
            .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let e = a
            .verify_client_pair(&a.admin_cert_pem, &other.admin_key_pem)
            .unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        assert_eq!(user, "system:admin");
        assert_eq!(groups, vec!["system:masters".to_string()]);
        // A new SAN re-issues the serving cert but keeps the CA.
        let more = vec!["127.0.0.1".to_string(), "example.test".to_string()];
        let c = Pki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem);
        assert_ne!(a.server_cert_pem, c.server_cert_pem);
    }
}
