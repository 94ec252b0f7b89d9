//! Just enough DER to read a certificate's subject alternative names, for
//! `client_allowed_sans`: the DNS names, e-mail addresses, IP addresses and URIs,
//! written as Go's `crypto/x509` writes them (an IPv4 address in dotted form,
//! also when it is stored as an IPv4-mapped IPv6 address).
//!
//! Every length is checked against what is left, so a hostile certificate can
//! only make the walk stop with `None`.

/// A DER element: its tag, its content, and what follows it.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Splits the first element off `input`.
fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never occur in the parts of a certificate walked here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((Element { tag, content }, rest))
}

/// The elements of a constructed element's content, in order (`None` when one
/// of them is malformed).
fn children(mut content: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (e, rest) = element(content)?;
        out.push(e);
        content = rest;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1d, 0x11];

/// The subject alternative names of a DER certificate (empty when it has
/// none), or `None` when it is not a well-formed certificate.
pub fn subject_alt_names(der: &[u8]) -> Option<Vec<String>> {
    let (cert, rest) = element(der)?;
    if cert.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let parts = children(cert.content)?;
    // tbsCertificate, signatureAlgorithm, signatureValue.
    if parts.len() != 3 || parts[0].tag != SEQUENCE {
        return None;
    }
    let tbs = children(parts[0].content)?;
    let mut names = Vec::new();
    let Some(extensions) = tbs.iter().find(|e| e.tag == EXTENSIONS) else {
        return Some(names);
    };
    let (list, _) = element(extensions.content)?;
    if list.tag != SEQUENCE {
        return None;
    }
    for extension in children(list.content)? {
        let fields = children(extension.content)?;
        let (Some(id), Some(value)) = (fields.first(), fields.last()) else {
            return None;
        };
        if id.tag != OID || value.tag != OCTET_STRING || id.content != SUBJECT_ALT_NAME {
            continue;
        }
        let (general_names, _) = element(value.content)?;
        if general_names.tag != SEQUENCE {
            return None;
        }
        for name in children(general_names.content)? {
            let text = || String::from_utf8(name.content.to_vec()).ok();
            match name.tag {
                // rfc822Name, dNSName, uniformResourceIdentifier: IA5 strings.
                0x81 | 0x82 | 0x86 => names.push(text()?),
                // iPAddress: 4 or 16 bytes.
                0x87 => names.push(ip(name.content)?),
                // otherName, x400Address, directoryName, ediPartyName,
                // registeredID: not compared by client_allowed_sans.
                _ => {}
            }
        }
    }
    Some(names)
}

fn ip(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(octets);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of `tag` around `content`.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn certificate(extensions: Option<Vec<u8>>) -> Vec<u8> {
        let mut tbs = der(0x02, &[1]);
        tbs.extend(der(SEQUENCE, &[]));
        if let Some(ext) = extensions {
            tbs.extend(der(EXTENSIONS, &der(SEQUENCE, &ext)));
        }
        let mut cert = der(SEQUENCE, &tbs);
        cert.extend(der(SEQUENCE, &[]));
        cert.extend(der(0x03, &[0]));
        der(SEQUENCE, &cert)
    }

    fn san(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (tag, value) in names {
            list.extend(der(*tag, value));
        }
        let mut ext = der(OID, &SUBJECT_ALT_NAME);
        ext.extend(der(OCTET_STRING, &der(SEQUENCE, &list)));
        der(SEQUENCE, &ext)
    }

    #[test]
    fn reads_the_four_kinds() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 0, 0, 7]);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[2] = 0x0d;
        v6[3] = 0xb8;
        v6[15] = 1;
        let mut other_ext = der(OID, &[0x55, 0x1d, 0x13]);
        other_ext.extend(der(OCTET_STRING, &der(SEQUENCE, &[])));
        let mut exts = der(SEQUENCE, &other_ext);
        exts.extend(san(&[
            (0x82, b"prometheus.lab"),
            (0x81, b"ops@example.org"),
            (0x87, &[127, 0, 0, 1]),
            (0x87, &mapped),
            (0x87, &v6),
            (0x86, b"spiffe://lab/prometheus"),
            (0xa4, &der(SEQUENCE, &[])),
        ]));
        assert_eq!(
            subject_alt_names(&certificate(Some(exts))).expect("parses"),
            [
                "prometheus.lab",
                "ops@example.org",
                "127.0.0.1",
                "10.0.0.7",
                "2001:db8::1",
                "spiffe://lab/prometheus"
            ]
        );
        assert_eq!(
            subject_alt_names(&certificate(None)).expect("parses"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn garbage_is_none() {
        let good = certificate(Some(san(&[(0x82, b"a")])));
        for cut in 0..good.len() {
            assert!(subject_alt_names(&good[..cut]).is_none(), "cut at {cut}");
        }
        assert!(subject_alt_names(&certificate(Some(san(&[(0x87, &[1, 2, 3])])))).is_none());
        assert!(subject_alt_names(b"\x30\x84\xff\xff\xff\xff").is_none());
        assert!(subject_alt_names(&[]).is_none());
    }
}
