//! TLS on both sides of the proxy. Towards the agent: a leaf certificate for
//! each intercepted host, minted on first use from the bottle's CA (one P-256
//! key shared by all leaves, a unique serial each, cached per host for a day),
//! offering h2 and http/1.1 by ALPN. Towards upstreams: verification against
//! the system roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus
//! the configuration's extra CAs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bottle_core::sidecar::EgressConfig;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::EgressError;

/// ALPN protocol ids.
const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";
/// How long a minted leaf is used before a fresh one is minted.
const LEAF_REUSE: Duration = Duration::from_secs(24 * 60 * 60);
/// A leaf's validity: from a day back (guest clock skew) to a week ahead.
const LEAF_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Hosts whose leaves are kept; the cache starts over when it is full.
const LEAF_CACHE: usize = 1024;

/// The proxy's TLS material.
pub(crate) struct Tls {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaf_key: KeyPair,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
    serial: AtomicU64,
    /// Upstream client configuration offering h2 and http/1.1.
    pub(crate) upstream: Arc<ClientConfig>,
    /// Upstream client configuration offering http/1.1 only (for upgrades).
    pub(crate) upstream_h1: Arc<ClientConfig>,
}

impl Tls {
    pub(crate) fn new(config: &EgressConfig) -> Result<Self, EgressError> {
        let ca = |what: &str, err: &dyn std::fmt::Display| EgressError::Ca(format!("{what}: {err}"));
        let ca_key = KeyPair::from_pem(config.policy.ca_key_pem.expose()).map_err(|err| ca("the CA key", &err))?;
        let ca_der = CertificateDer::from_pem_slice(config.policy.ca_cert_pem.as_bytes())
            .map_err(|err| ca("the CA certificate", &err))?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|err| ca("the CA certificate", &err))?;
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|err| ca("the leaf key", &err))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (system, _) = roots.add_parsable_certificates(native.certs);
        if let Some(pem) = &config.policy.extra_upstream_ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|err| EgressError::Config(format!("extra_upstream_ca_pem: {err}")))?;
                roots.add(cert).map_err(|err| EgressError::Config(format!("extra_upstream_ca_pem: {err}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(EgressError::Config("extra_upstream_ca_pem holds no certificate".into()));
            }
        }
        if roots.is_empty() {
            eprintln!("egress: warning: no trusted upstream CA (no system roots, no extra_upstream_ca_pem)");
        } else if system == 0 {
            eprintln!("egress: warning: no system root certificates found; only extra_upstream_ca_pem is trusted");
        }
        let roots = Arc::new(roots);
        let client = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, EgressError> {
            let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(Arc::clone(&roots))
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Tls {
            upstream: client(&[H2, HTTP11])?,
            upstream_h1: client(&[HTTP11])?,
            issuer,
            ca_der,
            leaf_key,
            provider,
            leaves: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
        })
    }

    /// The server configuration presenting a leaf for `host` (a DNS name or IP literal).
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((minted, config)) = leaves.get(host)
            && minted.elapsed() < LEAF_REUSE
        {
            return Ok(Arc::clone(config));
        }
        let config = self.mint(host)?;
        if leaves.len() >= LEAF_CACHE {
            leaves.clear();
        }
        leaves.insert(host.to_owned(), (Instant::now(), Arc::clone(&config)));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let failed = |err: &dyn std::fmt::Display| format!("cannot mint a certificate for {host}: {err}");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(|err| failed(&err))?),
        }];
        params.distinguished_name = rcgen::DistinguishedName::new();
        if host.len() <= 64 {
            params.distinguished_name.push(DnType::CommonName, host);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - LEAF_BACKDATE).into();
        params.not_after = (now + LEAF_VALIDITY).into();
        params.serial_number = Some(self.next_serial(now));
        let cert = params.signed_by(&self.leaf_key, &self.issuer).map_err(|err| failed(&err))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| failed(&err))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key)
            .map_err(|err| failed(&err))?;
        config.alpn_protocols = vec![H2.to_vec(), HTTP11.to_vec()];
        Ok(Arc::new(config))
    }

    /// A serial no other leaf of this CA has: the minting time and a counter
    /// (all leaves share one key, so rcgen's key-derived default would repeat).
    fn next_serial(&self, now: SystemTime) -> SerialNumber {
        let nanos = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&(nanos as u64).to_be_bytes());
        bytes.extend_from_slice(&self.serial.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        bytes[0] &= 0x7f;
        bytes[0] |= 0x01;
        SerialNumber::from_slice(&bytes)
    }
}

/// Whether a TLS session negotiated HTTP/2.
pub(crate) fn is_h2(alpn: Option<&[u8]>) -> bool {
    alpn == Some(H2)
}
