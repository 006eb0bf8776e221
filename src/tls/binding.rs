//! SCRAM channel binding (`tls-server-end-point`, RFC 5929 §4.1): the hash of the server's
//! certificate that `SCRAM-SHA-256-PLUS` binds the login to, so a man in the middle holding
//! another certificate cannot relay it. Pure functions over DER bytes ([`der`]).
//!
//! The hash function is the one the certificate's signature uses, except that MD5 and SHA-1
//! become SHA-256; for RSASSA-PSS it is the hash in the signature's parameters (SHA-1 when
//! absent, so SHA-256). PostgreSQL's server computes it the same way
//! (`be_tls_get_certificate_hash`). For a signature it cannot map to one hash (Ed25519, Ed448)
//! it offers no binding, and neither does this, nor for SHA-224 (not in ring): tokio-postgres
//! then logs in with plain `SCRAM-SHA-256` under the default `channel_binding=prefer`, and
//! refuses under `channel_binding=require`.

use ring::digest;

use super::der::{self, OID, SEQUENCE};

/// The `tls-server-end-point` data for the server's end-entity certificate `cert` (DER), or
/// `None` when its signature algorithm names no single hash or the bytes are not a certificate.
pub(crate) fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let identifier = der::certificate(cert)?.signature_algorithm;
    let (oid, parameters) = der::element(identifier, OID)?;
    let algorithm = hash_for(oid, parameters)?;
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// 1.2.840.113549.1.1.x (PKCS #1) and 1.2.840.10045.4.x (ECDSA).
const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
/// 2.16.840.1.101.3.4.2.x (the SHA-2 hashes) and 1.3.14.3.2.26 (SHA-1).
const SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];

/// The hash RFC 5929 asks for, by the signature algorithm's OID and parameters (DER contents).
fn hash_for(oid: &[u8], parameters: &[u8]) -> Option<&'static digest::Algorithm> {
    if let Some(last) = oid.strip_prefix(PKCS1) {
        return match last {
            // md5-, sha1- (RFC 5929: MD5 and SHA-1 become SHA-256) and sha256WithRSAEncryption.
            [0x04] | [0x05] | [0x0b] => Some(&digest::SHA256),
            [0x0c] => Some(&digest::SHA384),
            [0x0d] => Some(&digest::SHA512),
            [0x0a] => pss_hash(parameters),
            // 0x0e is sha224 (not in ring).
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1, ecdsa-with-SHA256.
        [0x01] | [0x03, 0x02] => Some(&digest::SHA256),
        [0x03, 0x03] => Some(&digest::SHA384),
        [0x03, 0x04] => Some(&digest::SHA512),
        _ => None,
    }
}

/// `RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] EXPLICIT AlgorithmIdentifier DEFAULT
/// sha1, ... }` (RFC 4055).
fn pss_hash(parameters: &[u8]) -> Option<&'static digest::Algorithm> {
    let (params, _) = der::element(parameters, SEQUENCE)?;
    let hash_oid = match der::element(params, 0xa0) {
        Some((explicit, _)) => der::element(der::element(explicit, SEQUENCE)?.0, OID)?.0,
        None => SHA1,
    };
    if hash_oid == SHA1 {
        return Some(&digest::SHA256);
    }
    match hash_oid.strip_prefix(SHA2)? {
        [0x01] => Some(&digest::SHA256),
        [0x02] => Some(&digest::SHA384),
        [0x03] => Some(&digest::SHA512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::der::tests::{SHA256_RSA, certificate_der, tlv};

    /// A structurally valid certificate whose signature algorithm is `oid`: what the hash
    /// choice reads (the signature itself is not checked here; rustls did that).
    fn certificate(oid: &[u8]) -> Vec<u8> {
        certificate_der(oid, Some("db"), None)
    }

    #[test]
    fn the_hash_follows_the_signature_and_md5_and_sha1_become_sha256() {
        for (oid, len) in [
            (SHA256_RSA, 32),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05][..],
                32,
            ),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04][..],
                32,
            ),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c][..],
                48,
            ),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d][..],
                64,
            ),
            (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..], 32),
            (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03][..], 48),
            (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04][..], 64),
        ] {
            let cert = certificate(oid);
            let hash = tls_server_end_point(&cert).unwrap_or_else(|| panic!("{oid:x?}"));
            assert_eq!(hash.len(), len, "{oid:x?}");
        }
        // It is the hash of the whole certificate.
        let cert = certificate(SHA256_RSA);
        assert_eq!(
            tls_server_end_point(&cert).unwrap(),
            digest::digest(&digest::SHA256, &cert).as_ref()
        );
    }

    #[test]
    fn rsassa_pss_binds_with_the_hash_of_its_parameters() {
        let pss = |hash: Option<&[u8]>| {
            let params = match hash {
                Some(oid) => tlv(0xa0, &tlv(SEQUENCE, &tlv(OID, oid))),
                None => Vec::new(),
            };
            let oid = tlv(OID, &[PKCS1, &[0x0a]].concat());
            let (oid, _) = der::element(&oid, OID).unwrap();
            hash_for(oid, &tlv(SEQUENCE, &params)).map(|a| a.output_len())
        };
        assert_eq!(pss(None), Some(32), "SHA-1 by default, so SHA-256");
        assert_eq!(pss(Some(SHA1)), Some(32));
        assert_eq!(pss(Some(&[SHA2, &[0x01]].concat())), Some(32));
        assert_eq!(pss(Some(&[SHA2, &[0x02]].concat())), Some(48));
        assert_eq!(pss(Some(&[SHA2, &[0x03]].concat())), Some(64));
        assert_eq!(pss(Some(&[SHA2, &[0x04]].concat())), None, "SHA-224");
    }

    #[test]
    fn no_binding_without_a_single_hash_or_a_certificate() {
        // Ed25519, sha224WithRSAEncryption, an unknown OID.
        for oid in [
            &[0x2b, 0x65, 0x70][..],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e][..],
            &[0x2a, 0x03][..],
        ] {
            assert_eq!(tls_server_end_point(&certificate(oid)), None, "{oid:x?}");
        }
        // Truncated or garbage bytes are not read past their end.
        let cert = certificate(SHA256_RSA);
        for len in [0, 1, 2, 5, 100, cert.len() - 20] {
            assert_eq!(tls_server_end_point(&cert[..len]), None, "{len}");
        }
        assert_eq!(tls_server_end_point(&[0x30, 0x89, 0xff, 0xff]), None);
    }
}
