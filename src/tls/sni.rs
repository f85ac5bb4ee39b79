//! The certificate a handshake gets, by the client's SNI name: the first
//! certificate, in the listener's order, that webpki finds valid for the
//! name; without SNI, or when none is valid, the first one.
//!
//! Each certificate's DNS names are read once, when the listener's config
//! is built, into an index ([`Names`]). A handshake looks its name up there
//! and asks webpki only about the certificates the name could be valid for.
//! Asking about every certificate parsed each one at every handshake: a
//! listener with many certificates paid for all of them, for any name a
//! client cared to send.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Resolves a listener's certificate by SNI.
#[derive(Debug)]
pub(super) struct SniResolver {
    certificates: Vec<Arc<CertifiedKey>>,
    names: Names,
}

/// Which certificates a DNS name may be valid for: never fewer than webpki
/// would accept (it decides among them), usually exactly those.
#[derive(Debug, Default)]
struct Names {
    /// A name a certificate presents, in lower case, without a final dot:
    /// the certificates (their indexes) that present it.
    exact: HashMap<Box<str>, Vec<usize>>,
    /// The parent of a wildcard name (`example.com` for `*.example.com`):
    /// the certificates that present the wildcard.
    wildcard: HashMap<Box<str>, Vec<usize>>,
    /// Certificates whose names could not be read here: asked about every
    /// name.
    always: Vec<usize>,
}

impl SniResolver {
    pub(super) fn new(certificates: Vec<Arc<CertifiedKey>>) -> Self {
        let mut names = Names::default();
        for (index, key) in certificates.iter().enumerate() {
            match key.end_entity_cert().ok().and_then(dns_names) {
                Some(presented) => names.add(index, &presented),
                None => names.always.push(index),
            }
        }
        Self {
            certificates,
            names,
        }
    }

    /// The index of the certificate for `name`, if one is valid for it.
    fn pick(&self, name: &ServerName<'_>) -> Option<usize> {
        let ServerName::DnsName(dns) = name else {
            // Not an SNI name (clients send DNS names only): asked of each.
            return self.first_valid(name);
        };
        self.names
            .candidates(dns.as_ref())
            .into_iter()
            .find(|&i| self.is_valid(i, name))
    }

    /// The first certificate webpki finds valid for `name`, each asked in
    /// turn (what the index spares a DNS name; the tests' reference).
    fn first_valid(&self, name: &ServerName<'_>) -> Option<usize> {
        (0..self.certificates.len()).find(|&i| self.is_valid(i, name))
    }

    /// webpki's verdict: whether certificate `index` is valid for `name`.
    fn is_valid(&self, index: usize, name: &ServerName<'_>) -> bool {
        self.certificates[index].end_entity_cert().is_ok_and(|der| {
            webpki::EndEntityCert::try_from(der)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.certificates.first().cloned();
        if self.certificates.len() == 1 {
            // The only one, whatever the client asked for: no name to check.
            return first;
        }
        let Some(sni) = hello.server_name() else {
            return first;
        };
        let Ok(name) = ServerName::try_from(sni) else {
            return first;
        };
        match self.pick(&name) {
            Some(index) => Some(Arc::clone(&self.certificates[index])),
            None => first,
        }
    }
}

impl Names {
    fn add(&mut self, index: usize, presented: &[String]) {
        for name in presented {
            let name = normal(name);
            let (map, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcard, parent),
                None => (&mut self.exact, name.as_str()),
            };
            let indexes = map.entry(key.into()).or_default();
            if indexes.last() != Some(&index) {
                indexes.push(index);
            }
        }
    }

    /// The certificates `name` may be valid for, in the listener's order.
    fn candidates(&self, name: &str) -> Vec<usize> {
        let name = normal(name);
        let mut found = self.always.clone();
        found.extend(self.exact.get(name.as_str()).into_iter().flatten());
        // A wildcard stands for exactly one label: `*.b.test` for `x.b.test`.
        if let Some((_, parent)) = name.split_once('.') {
            found.extend(self.wildcard.get(parent).into_iter().flatten());
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// A DNS name as the index keeps it: ASCII lower case (names compare
/// without case), one final dot dropped (an absolute name is the same
/// name).
fn normal(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The DNS names in a certificate's subject alternative names (webpki
/// looks nowhere else: not at the subject's common name); `None` if they
/// cannot be read.
fn dns_names(der: &CertificateDer<'_>) -> Option<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let Some(san) = cert.subject_alternative_name().ok()? else {
        return Some(Vec::new());
    };
    let mut names = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
            // A name not read (not UTF-8): let webpki judge the certificate.
            GeneralName::Invalid(..) => return None,
            _ => {}
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate presenting `names`, with its own key.
    fn certificate(names: &[&str]) -> Arc<CertifiedKey> {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let chain = vec![cert.cert.der().clone()];
        Arc::new(CertifiedKey::from_der(chain, key, &super::super::provider()).expect("key"))
    }

    #[test]
    fn the_index_picks_what_asking_each_certificate_picks() {
        let resolver = SniResolver::new(vec![
            certificate(&["a.test"]),
            certificate(&["*.b.test"]),
            certificate(&["B.Test", "c.test"]),
            certificate(&["x.b.test"]),
            certificate(&["*.test"]),
            certificate(&["d.test.", "*.*.e.test", "f*.g.test"]),
            certificate(&["*.B.TEST", "deep.x.b.test"]),
            certificate(&[]),
        ]);
        let names = [
            "a.test",
            "A.TEST",
            "a.test.",
            "b.test",
            "x.b.test",
            "X.B.Test",
            "y.b.test",
            "x.y.b.test",
            "deep.x.b.test",
            "c.test",
            "d.test",
            "d.test.",
            "z.e.test",
            "y.z.e.test",
            "fo.g.test",
            "f.g.test",
            "test",
            "q.test",
            "Q.TEST.",
            "none.example",
            "a-b.test",
            "xn--bcher-kva.test",
            "_srv.b.test",
        ];
        let mut picked = 0;
        for name in names {
            let name = ServerName::try_from(name).expect(name);
            let indexed = resolver.pick(&name);
            assert_eq!(indexed, resolver.first_valid(&name), "{name:?}");
            picked += usize::from(indexed.is_some());
        }
        // Some names are covered, some not (the first certificate then).
        assert_eq!(picked, 10);
        assert_eq!(
            resolver.pick(&ServerName::try_from("x.b.test").unwrap()),
            Some(1)
        );
        assert_eq!(
            resolver.pick(&ServerName::try_from("b.test").unwrap()),
            Some(2)
        );
        assert_eq!(
            resolver.pick(&ServerName::try_from("deep.x.b.test").unwrap()),
            Some(6)
        );
    }

    #[test]
    fn an_ip_address_is_asked_of_each_certificate() {
        let resolver =
            SniResolver::new(vec![certificate(&["a.test"]), certificate(&["127.0.0.1"])]);
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        assert_eq!(resolver.pick(&ip), Some(1));
    }
}
