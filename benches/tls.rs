//! A TLS 1.3 handshake, in memory, against a listener with 50
//! certificates: the client asks for the first certificate's name or for
//! the last's. Choosing the certificate by SNI should cost the same for
//! both (`tls/sni.rs`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

const CERTIFICATES: usize = 50;

/// The listener's server config (certificates for svc0.test ..
/// svc49.test, in that order, from files as a config names them) and a
/// client that trusts them all.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut roots = RootCertStore::empty();
    let mut files = Vec::new();
    for i in 0..CERTIFICATES {
        // Each its own subject, so that the client finds its root at once.
        let name = format!("svc{i}.test");
        let mut params = rcgen::CertificateParams::new(vec![name.clone()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let signing_key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&signing_key).expect("certificate");
        let ck = rcgen::CertifiedKey { cert, signing_key };
        let cert = dir.path().join(format!("{i}.pem"));
        let key = dir.path().join(format!("{i}.key"));
        std::fs::write(&cert, ck.cert.pem()).expect("write");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
        roots.add(ck.cert.der().clone()).expect("root");
        files.push((cert, key));
    }
    let pairs = files.iter().map(|(c, k)| (c.as_path(), k.as_path()));
    let server = fulcrum::tls::server_config(pairs, false).expect("server config");
    let client = ClientConfig::builder_with_provider(fulcrum::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, Arc::new(client))
}

/// One full handshake, both sides, bytes passed in memory.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, name: &ServerName<'static>) {
    let mut c = ClientConnection::new(Arc::clone(client), name.clone()).expect("client");
    let mut s = ServerConnection::new(Arc::clone(server)).expect("server");
    let mut wire = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("client writes");
        }
        s.read_tls(&mut wire.as_slice()).expect("server reads");
        s.process_new_packets().expect("server accepts");
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).expect("server writes");
        }
        c.read_tls(&mut wire.as_slice()).expect("client reads");
        c.process_new_packets().expect("client accepts");
    }
    black_box((c, s));
}

fn bench(c: &mut Criterion) {
    let (server, client) = configs();
    let mut group = c.benchmark_group("tls_handshake_50_certificates");
    for (label, i) in [("first", 0), ("last", CERTIFICATES - 1)] {
        let name = ServerName::try_from(format!("svc{i}.test")).expect("name");
        group.bench_function(label, |b| b.iter(|| handshake(&server, &client, &name)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
