//! Just enough DER to read the parts of an X.509 certificate that rustls's WebPKI check does
//! not expose or does not accept, where libpq (OpenSSL) does: the signature algorithm (SCRAM
//! channel binding), the public key of a version 1 certificate (its handshake signature), the
//! subject's common name and whether there are alternative names (libpq's host-name fallback),
//! and the validity (a self-signed server certificate pinned in `tls_ca_file`). A leaf: it
//! imports no sibling. Every read is bounds-checked; a malformed certificate reads as `None`.

pub(crate) const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
pub(crate) const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// `id-at-commonName` (2.5.4.3) and `id-ce-subjectAltName` (2.5.29.17), as DER contents.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element of `tag` at the start of `input`: (its contents, what follows it).
pub(crate) fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    tlv(input, tag).map(|(_, contents, rest)| (contents, rest))
}

/// One DER element of `tag`: (the whole element, its contents, what follows it).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8], &[u8])> {
    let (&first, after_tag) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, rest) = after_tag.split_first()?;
    let (length, rest) = if length < 0x80 {
        (usize::from(length), rest)
    } else {
        // Long form: the low bits say how many length bytes follow (a certificate needs ≤ 4).
        let count = usize::from(length & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, after) = rest.split_at(length);
    Some((&input[..header + length], contents, after))
}

/// The fields of a certificate this crate reads (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Certificate<'a> {
    /// The contents of the outer `signatureAlgorithm` (an `AlgorithmIdentifier`).
    pub(crate) signature_algorithm: &'a [u8],
    /// The whole `SubjectPublicKeyInfo` element.
    pub(crate) spki: &'a [u8],
    /// `notBefore` and `notAfter`, in seconds since 1970.
    pub(crate) validity: (u64, u64),
    subject: &'a [u8],
    extensions: Option<&'a [u8]>,
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`, with
/// `TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity, subject, subjectPublicKeyInfo, [1] [2] unique IDs OPTIONAL, [3] extensions
/// OPTIONAL }`.
pub(crate) fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, after_tbs) = element(certificate, SEQUENCE)?;
    let (signature_algorithm, _) = element(after_tbs, SEQUENCE)?;
    let mut fields = tbs;
    if fields.first() == Some(&0xa0) {
        fields = element(fields, 0xa0)?.1;
    }
    let (_, fields) = element(fields, INTEGER)?;
    let (_, fields) = element(fields, SEQUENCE)?;
    let (_, fields) = element(fields, SEQUENCE)?;
    let (validity, fields) = element(fields, SEQUENCE)?;
    let (subject, fields) = element(fields, SEQUENCE)?;
    let (spki, _, mut fields) = tlv(fields, SEQUENCE)?;
    let mut extensions = None;
    while let Some(&tag) = fields.first() {
        let (contents, rest) = element(fields, tag)?;
        if tag == 0xa3 {
            extensions = Some(element(contents, SEQUENCE)?.0);
        }
        fields = rest;
    }
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Certificate {
        signature_algorithm,
        spki,
        validity: (not_before, not_after),
        subject,
        extensions,
    })
}

impl Certificate<'_> {
    /// The subject's (first) common name, when it is text.
    pub(crate) fn common_name(&self) -> Option<String> {
        let mut names = self.subject;
        while !names.is_empty() {
            let (set, rest) = element(names, SET)?;
            names = rest;
            let mut attributes = set;
            while !attributes.is_empty() {
                let (attribute, rest) = element(attributes, SEQUENCE)?;
                attributes = rest;
                let (oid, value) = element(attribute, OID)?;
                if oid != COMMON_NAME {
                    continue;
                }
                // UTF8String, PrintableString, T61String (read as Latin-1), IA5String.
                let (&tag, _) = value.split_first()?;
                let (text, _) = element(value, tag)?;
                return match tag {
                    0x0c | 0x13 | 0x16 => std::str::from_utf8(text).ok().map(str::to_owned),
                    0x14 => Some(text.iter().map(|&b| char::from(b)).collect()),
                    _ => None,
                };
            }
        }
        None
    }

    /// Whether `subjectAltName` names a DNS name or an IP address (then libpq, like WebPKI,
    /// ignores the common name).
    pub(crate) fn has_alt_names(&self) -> bool {
        self.alt_names().unwrap_or(false)
    }

    fn alt_names(&self) -> Option<bool> {
        let mut extensions = self.extensions?;
        while !extensions.is_empty() {
            let (extension, rest) = element(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, mut fields) = element(extension, OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if fields.first() == Some(&BOOLEAN) {
                fields = element(fields, BOOLEAN)?.1;
            }
            let (value, _) = element(fields, OCTET_STRING)?;
            let (mut names, _) = element(value, SEQUENCE)?;
            while let Some(&tag) = names.first() {
                // [2] dNSName, [7] iPAddress (implicit, primitive).
                if tag == 0x82 || tag == 0x87 {
                    return Some(true);
                }
                names = element(names, tag)?.1;
            }
            return Some(false);
        }
        Some(false)
    }
}

/// A `Time` (UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`) at the start of
/// `input`, in seconds since 1970, and what follows it.
fn time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (&tag, _) = input.split_first()?;
    let (text, rest) = element(input, tag)?;
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
        })
    };
    let (year, rest_of_time) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            // RFC 5280: 50–99 are 19xx, 00–49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest_of_time.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest_of_time[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's `days_from_civil`), `None` before
/// 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DER element of `tag` holding `contents`.
    pub(crate) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// A structurally valid certificate: version 3 when `extensions` is given, else version 1.
    pub(crate) fn certificate_der(
        algorithm_oid: &[u8],
        common_name: Option<&str>,
        extensions: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let algorithm = tlv(
            SEQUENCE,
            &[tlv(OID, algorithm_oid), vec![0x05, 0x00]].concat(),
        );
        let subject = match common_name {
            Some(cn) => tlv(
                SEQUENCE,
                &tlv(
                    SET,
                    &tlv(
                        SEQUENCE,
                        &[tlv(OID, &[0x55, 0x04, 0x0a]), tlv(0x0c, b"org")].concat(),
                    ),
                )
                .into_iter()
                .chain(tlv(
                    SET,
                    &tlv(
                        SEQUENCE,
                        &[tlv(OID, COMMON_NAME), tlv(0x0c, cn.as_bytes())].concat(),
                    ),
                ))
                .collect::<Vec<_>>(),
            ),
            None => tlv(SEQUENCE, &[]),
        };
        let validity = tlv(
            SEQUENCE,
            &[
                tlv(UTC_TIME, b"200101000000Z"),
                tlv(GENERALIZED_TIME, b"20991231235959Z"),
            ]
            .concat(),
        );
        let spki = tlv(SEQUENCE, &[0x30; 200]);
        let mut tbs = Vec::new();
        if extensions.is_some() {
            tbs.extend(tlv(0xa0, &tlv(INTEGER, &[2])));
        }
        tbs.extend(tlv(INTEGER, &[0x01, 0x02]));
        tbs.extend(algorithm.clone());
        tbs.extend(tlv(SEQUENCE, &[])); // issuer
        tbs.extend(validity);
        tbs.extend(subject);
        tbs.extend(spki);
        if let Some(extensions) = extensions {
            tbs.extend(tlv(0xa3, &tlv(SEQUENCE, &extensions)));
        }
        let signature = tlv(0x03, &[0x00, 0xab, 0xcd]);
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), algorithm, signature].concat(),
        )
    }

    /// A subjectAltName extension with these (tag, value) general names.
    pub(crate) fn alt_names(names: &[(u8, &[u8])]) -> Vec<u8> {
        let names: Vec<u8> = names.iter().flat_map(|(t, v)| tlv(*t, v)).collect();
        tlv(
            SEQUENCE,
            &[
                tlv(OID, SUBJECT_ALT_NAME),
                tlv(OCTET_STRING, &tlv(SEQUENCE, &names)),
            ]
            .concat(),
        )
    }

    /// sha256WithRSAEncryption, the signature algorithm of the test certificates.
    pub(crate) const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];

    #[test]
    fn the_fields_are_read_from_version_1_and_3_certificates() {
        let v1 = certificate_der(SHA256_RSA, Some("db.example.com"), None);
        let cert = certificate(&v1).unwrap();
        assert_eq!(cert.common_name().as_deref(), Some("db.example.com"));
        assert!(!cert.has_alt_names());
        // 2020-01-01T00:00:00Z and 2099-12-31T23:59:59Z.
        assert_eq!(cert.validity, (1_577_836_800, 4_102_444_799));
        assert_eq!(cert.spki, tlv(SEQUENCE, &[0x30; 200]).as_slice());
        assert_eq!(
            element(cert.signature_algorithm, OID).unwrap().0,
            SHA256_RSA
        );

        let v3 = certificate_der(
            SHA256_RSA,
            Some("ignored"),
            Some(alt_names(&[(0x82, b"db.example.com")])),
        );
        assert!(certificate(&v3).unwrap().has_alt_names());
        // Alternative names of other kinds (an email address) do not count.
        let email = certificate_der(SHA256_RSA, Some("x"), Some(alt_names(&[(0x81, b"a@b")])));
        assert!(!certificate(&email).unwrap().has_alt_names());
        assert_eq!(
            certificate(&email).unwrap().common_name().as_deref(),
            Some("x")
        );
        let none = certificate_der(SHA256_RSA, None, Some(Vec::new()));
        assert_eq!(certificate(&none).unwrap().common_name(), None);
    }

    #[test]
    fn malformed_bytes_read_as_none_and_never_past_their_end() {
        let der = certificate_der(
            SHA256_RSA,
            Some("db"),
            Some(alt_names(&[(0x87, &[127, 0, 0, 1])])),
        );
        assert!(certificate(&der).is_some());
        for len in 0..der.len() {
            assert!(certificate(&der[..len]).is_none(), "{len}");
        }
        assert!(certificate(&[0x30, 0x89, 0xff, 0xff]).is_none());
        assert!(certificate(b"not a certificate").is_none());
    }

    #[test]
    fn times_follow_rfc_5280() {
        assert_eq!(time(&tlv(UTC_TIME, b"700101000001Z")).map(|t| t.0), Some(1));
        assert_eq!(
            time(&tlv(GENERALIZED_TIME, b"19691231235959Z")),
            None,
            "before 1970"
        );
        assert_eq!(
            time(&tlv(GENERALIZED_TIME, b"00000101000000Z")),
            None,
            "year 0"
        );
        assert_eq!(
            time(&tlv(UTC_TIME, b"491231235959Z")).map(|t| t.0),
            Some(2_524_607_999)
        );
        assert_eq!(
            time(&tlv(GENERALIZED_TIME, b"20240229120000Z")).map(|t| t.0),
            Some(1_709_208_000)
        );
        assert_eq!(time(&tlv(UTC_TIME, b"201301000000Z")), None, "month 13");
        assert_eq!(time(&tlv(UTC_TIME, b"2001010000Z")), None, "no seconds");
    }
}
