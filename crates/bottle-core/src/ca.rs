//! The per-bottle certificate authority: the egress proxy mints its TLS leaf
//! certificates from it, and only its certificate enters the bottle's trust
//! store. Its private key stays with the proxy.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};

use crate::sidecar::Secret;
use crate::{Error, ErrorKind, Result};

/// How long a bottle's CA is valid: a bottle lives hours, not months.
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How far back the validity starts, so a guest clock a little behind still trusts it.
const BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// Mints a fresh CA for `bottle`: an ECDSA P-256 certificate with the common
/// name `bot-bottle CA <bottle>`, allowed to sign certificates, valid from a day
/// ago for 30 days. Returns the certificate and the private key, both PEM.
pub fn mint_ca(bottle: &str) -> Result<(String, Secret)> {
    let failed = |source: rcgen::Error| {
        Error::new(ErrorKind::InvalidInput, format!("could not mint the egress CA for bottle {bottle}"))
            .with_source(source)
            .with_operation("mint CA")
            .with_bottle(bottle)
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("bot-bottle CA {bottle}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + VALIDITY).into();
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), Secret::new(key.serialize_pem())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_pem_ca_and_key() {
        let (cert, key) = mint_ca("shell-1234").expect("mint");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.expose().contains("PRIVATE KEY-----"));
        let again = KeyPair::from_pem(key.expose()).expect("key parses");
        assert_eq!(again.algorithm(), &PKCS_ECDSA_P256_SHA256);
        let (other, _) = mint_ca("shell-1234").expect("mint again");
        assert_ne!(cert, other, "every bottle gets its own CA");
    }
}
