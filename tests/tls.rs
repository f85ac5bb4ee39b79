//! TLS listeners: rustls, ALPN h2 and http/1.1, certificate chosen by SNI.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Certs {
    _dir: tempfile::TempDir,
    roots: rustls::RootCertStore,
    toml: String,
}

/// Two self-signed certificates, for a.test and *.b.test, written to disk.
fn certificates() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let mut entries = Vec::new();
    for (file, names) in [
        ("a", vec!["a.test".to_string()]),
        ("b", vec!["*.b.test".to_string()]),
    ] {
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.path().join(format!("{file}.pem"));
        let key = dir.path().join(format!("{file}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        roots
            .add(CertificateDer::from(ck.cert.der().to_vec()))
            .unwrap();
        entries.push(format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ));
    }
    let toml = format!("[listener.tls]\ncertificates = [{}]\n", entries.join(", "));
    Certs {
        _dir: dir,
        roots,
        toml,
    }
}

async fn tls_proxy(b: &Backend, certs: &Certs) -> Proxy {
    tls_proxy_with_admin(b, certs, "").await
}

async fn tls_proxy_with_admin(b: &Backend, certs: &Certs, admin: &str) -> Proxy {
    let config = format!(
        "[admin]\nbind = \"{admin}\"\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\n{}\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{{ address = \"{}\" }}]\n",
        certs.toml, b.addr
    );
    Proxy::start(&config).await
}

async fn connect(
    addr: SocketAddr,
    roots: &rustls::RootCertStore,
    sni: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

#[tokio::test]
async fn sni_selects_the_certificate_and_alpn_the_protocol() {
    let b = Backend::spawn("a").await;
    let certs = certificates();
    let proxy = tls_proxy(&b, &certs).await;

    // h2 over TLS, certificate for a.test (verified against its own root).
    let tls = connect(proxy.addr(), &certs.roots, "a.test", &[b"h2", b"http/1.1"])
        .await
        .expect("a.test certificate served for SNI a.test");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.test/secure").body(empty()).unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "a"
    );
    let seen = b.last_seen();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], "a.test");

    // HTTP/1.1 over TLS, wildcard certificate for x.b.test.
    let tls = connect(proxy.addr(), &certs.roots, "x.b.test", &[b"http/1.1"])
        .await
        .expect("*.b.test certificate served for SNI x.b.test");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/one")
        .header("host", "x.b.test")
        .body(empty())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_11);

    // A name no certificate covers gets the first one, which the client rejects.
    let wrong = connect(proxy.addr(), &certs.roots, "c.test", &[b"http/1.1"]).await;
    assert!(wrong.is_err(), "no certificate is valid for c.test");
}

#[tokio::test]
async fn plain_http_on_a_tls_listener_is_refused() {
    let b = Backend::spawn("a").await;
    let certs = certificates();
    let proxy = tls_proxy(&b, &certs).await;
    let response = raw(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(!response.contains("200 OK"));
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn http2_negotiated_without_the_preface_is_a_goaway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::spawn("a").await;
    let certs = certificates();
    let proxy = tls_proxy(&b, &certs).await;
    let mut tls = connect(proxy.addr(), &certs.roots, "a.test", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    // rustls reports a close without close_notify as an error; what came
    // before it is what counts.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut got))
        .await
        .expect("closed within the bound");
    // GOAWAY: length 8, type 7, stream 0, last stream 0, PROTOCOL_ERROR.
    assert_eq!(got, [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn failed_handshakes_are_counted() {
    let b = Backend::spawn("a").await;
    let certs = certificates();
    let proxy = tls_proxy_with_admin(&b, &certs, "127.0.0.1:0").await;
    let admin = proxy.admin.expect("admin enabled");
    for _ in 0..3 {
        raw(
            proxy.addr(),
            b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n",
            std::time::Duration::from_secs(5),
        )
        .await;
    }
    let name = "fulcrum_downstream_tls_handshake_failures_total";
    eventually(std::time::Duration::from_secs(5), || async {
        metric(admin, name, "cause=\"error\"").await == 3.0
    })
    .await;
}

#[tokio::test]
async fn a_key_that_does_not_fit_its_certificate_is_a_config_error() {
    let certs = certificates();
    // Swap the keys of the two pairs.
    let swapped = certs
        .toml
        .replacen("a.key", "TMP", 1)
        .replacen("b.key", "a.key", 1)
        .replacen("TMP", "b.key", 1);
    let config = format!(
        "[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\n{swapped}\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n"
    );
    let error = fulcrum::config::parse(std::path::Path::new("t.toml"), &config).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("listener[0].tls.certificates[0].key"),
        "{text}"
    );
    assert!(text.contains("does not fit"), "{text}");
}

#[tokio::test]
async fn an_idle_tls_connection_parks_and_resumes() {
    let b = Backend::spawn("a").await;
    let certs = certificates();
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\n{}\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{{ address = \"{}\" }}]\n",
        certs.toml, b.addr
    );
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin.expect("admin enabled");
    let parks = || metric(admin, "fulcrum_downstream_parks_total", "");
    let tls = connect(proxy.addr(), &certs.roots, "a.test", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for round in 1..=3 {
        let req = Request::get(format!("/round/{round}"))
            .header("host", "a.test")
            .body(empty())
            .unwrap();
        let response = send.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "a"
        );
        // Parked between requests: the TLS session is kept, the buffers not.
        eventually(std::time::Duration::from_secs(5), || async {
            parks().await >= f64::from(round)
        })
        .await;
    }
}

/// One HTTP/1.1 request over a new connection made with `config`; whether
/// its handshake resumed a session.
async fn resumed(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .expect("handshake");
    let kind = tls.get_ref().1.handshake_kind();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "a.test")
        .body(empty())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    // Read whole: a TLS 1.3 ticket comes after the handshake.
    response.into_body().collect().await.unwrap();
    kind == Some(rustls::HandshakeKind::Resumed)
}

#[tokio::test]
async fn sessions_resume_unless_turned_off() {
    let b = Backend::spawn("a").await;
    let certs = certificates();
    // The one certificate of the listener is served whatever the name.
    let only_a = certs.toml.split(", {").next().unwrap().to_string() + "]\n";
    for (setting, expected) in [("", true), ("session_resumption = false\n", false)] {
        let proxy = Proxy::start(&format!(
            "[admin]\nbind = \"\"\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\n{only_a}{setting}\n[[route]]\nupstream = \"app\"\n[upstream.app]\nendpoints = [{{ address = \"{}\" }}]\n",
            b.addr
        ))
        .await;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(certs.roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        assert!(
            !resumed(proxy.addr(), &config).await,
            "a first handshake is full"
        );
        assert_eq!(
            resumed(proxy.addr(), &config).await,
            expected,
            "second handshake with {setting:?}"
        );
    }
}
