//! `[[listener]]` and its `[listener.tls]` (each certificate loaded once,
//! to report a bad file at its key).

use std::net::SocketAddr;
use std::path::Path;

use super::name;
use crate::config::raw::{Field, Issues, Table};
use crate::config::{CertificateConfig, ListenerConfig, TlsConfig};

const LISTENER_KEYS: &[&str] = &["name", "bind", "defer_accept", "tls"];
const TLS_KEYS: &[&str] = &["certificates", "session_resumption"];
const CERT_KEYS: &[&str] = &["cert", "key"];

pub(super) fn listener(
    t: &Table<'_, '_>,
    dir: &Path,
    issues: &mut Issues,
) -> Option<Field<ListenerConfig>> {
    t.deny_unknown(LISTENER_KEYS, issues);
    if t.value("name").is_none() {
        t.missing("name", issues);
    }
    let name = name(t, issues);
    let bind = t.required_string("bind", issues).and_then(|f| {
        f.value
            .parse::<SocketAddr>()
            .map_err(|_| f.fail(issues, format!("`{}` is not an IP:port address", f.value)))
            .ok()
    });
    let defer_accept = t.bool("defer_accept", issues).unwrap_or(false);
    #[cfg(not(target_os = "linux"))]
    if defer_accept && let Some(f) = t.value("defer_accept") {
        f.fail(issues, "needs Linux (TCP_DEFER_ACCEPT)");
    }
    let tls = t
        .table("tls", issues)
        .and_then(|tls| tls_config(&tls, dir, issues));
    let name = name?;
    Some(Field {
        value: ListenerConfig {
            name: name.value,
            bind: bind?,
            defer_accept,
            tls,
        },
        span: name.span,
        key: t.path.clone(),
    })
}

fn tls_config(t: &Table<'_, '_>, dir: &Path, issues: &mut Issues) -> Option<TlsConfig> {
    t.deny_unknown(TLS_KEYS, issues);
    let Some(list) = t.array("certificates", issues) else {
        t.missing("certificates", issues);
        return None;
    };
    if list.value.is_empty() {
        list.fail(issues, "must list at least one certificate");
        return None;
    }
    let mut certificates = Vec::new();
    for element in &list.value {
        let toml::de::DeValue::Table(table) = element.value else {
            element.fail(issues, "expected a table { cert = \"..\", key = \"..\" }");
            continue;
        };
        let pair = Table::inline(table, element.span.clone(), element.key.clone());
        pair.deny_unknown(CERT_KEYS, issues);
        let cert = pair.required_string("cert", issues);
        let key = pair.required_string("key", issues);
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        let config = CertificateConfig {
            cert: dir.join(cert.value),
            key: dir.join(key.value),
        };
        match crate::tls::load_certified_key(&config.cert, &config.key) {
            Ok(_) => certificates.push(config),
            Err(crate::tls::TlsError::Cert(why)) => cert.fail(issues, why),
            Err(crate::tls::TlsError::Key(why)) => key.fail(issues, why),
        }
    }
    Some(TlsConfig {
        certificates,
        session_resumption: t.bool("session_resumption", issues).unwrap_or(true),
    })
}
