//! Feeds arbitrary text to the web config parser (exporter-toolkit's format):
//! no panic, and what it accepts is a policy rustls can enforce exactly: TLS
//! 1.2/1.3 with min ≤ max, no suite or group listed twice, the HTTP/2 suite rule
//! held, allowed SANs only where a certificate is required, bcrypt costs of at
//! most 14, only the toolkit's headers, a rate limit that refills. When the
//! certificate and key are inline, the rustls setup is built too.
#![no_main]

use std::path::Path;

use edge_metrics_exporter::config::web::{MAX_BCRYPT_COST, bcrypt_cost, parse};
use edge_metrics_exporter::config::{Pem, Tls12Suite, TlsVersion};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve into a directory that does not exist.
    let Ok(web) = parse(text, Path::new("/nonexistent-fuzz/web.yml")) else {
        return;
    };
    if let Some(tls) = &web.tls {
        assert!(tls.min_version <= tls.max_version);
        if let Some(suites) = &tls.cipher_suites {
            let mut sorted: Vec<&str> = suites.iter().map(|s| s.name()).collect();
            sorted.sort_unstable();
            let n = sorted.len();
            sorted.dedup();
            assert_eq!(sorted.len(), n, "a suite twice");
            if tls.http2 && tls.min_version < TlsVersion::Tls13 {
                assert!(
                    suites.contains(&Tls12Suite::EcdheRsaAes128Gcm)
                        || suites.contains(&Tls12Suite::EcdheEcdsaAes128Gcm)
                );
            }
        }
        if let Some(curves) = &tls.curve_preferences {
            assert!(!curves.is_empty());
        }
        if tls.client_allowed_sans.is_some() {
            assert!(tls.client_auth.requires());
        }
        if let (Pem::Inline(_), Pem::Inline(_)) = (&tls.cert, &tls.key) {
            let _ = edge_metrics_exporter::net::tls::server(tls);
        }
    }
    for hash in web.users.values() {
        assert!(bcrypt_cost(hash).is_some_and(|c| c <= MAX_BCRYPT_COST));
    }
    for (name, _) in &web.headers {
        assert!(
            [
                "Strict-Transport-Security",
                "X-Content-Type-Options",
                "X-Frame-Options",
                "X-XSS-Protection",
                "Content-Security-Policy"
            ]
            .contains(&name.as_str())
        );
    }
    if let Some(limit) = web.rate_limit {
        assert!(!limit.interval.is_zero());
    }
});
