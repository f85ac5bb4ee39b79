//! The request probes of `tests/strict_origin.rs`: raw requests and the
//! requests the origin must parse from them, or the status they must get
//! (`response_probes.rs` holds the scripted origin responses).

/// (method, target, body) as the origin must parse it.
pub type Want = (String, String, String);

#[derive(Clone)]
pub enum Expect {
    /// Exactly these requests reach the origin, each answered 200.
    Forward(Vec<Want>),
    /// Nothing reaches the origin; the client gets this status.
    Refuse(u16),
    /// These reach the origin, then the next request gets this status.
    Then(Vec<Want>, u16),
}

pub struct Probe {
    pub name: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

fn want(method: &str, target: &str, body: &str) -> Want {
    (method.to_owned(), target.to_owned(), body.to_owned())
}

fn probe(name: impl Into<String>, bytes: impl AsRef<[u8]>, expect: Expect) -> Probe {
    Probe {
        name: name.into(),
        bytes: bytes.as_ref().to_vec(),
        expect,
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: probe\r\n\r\n";

/// A POST to `target` with `fields` (each ended by CR LF) and `body`.
fn post(target: &str, fields: &str, body: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: probe\r\n{fields}\r\n{body}")
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: probe\r\n\r\n")
}

/// A chunked body holding `data` in one chunk with the size line `line`.
fn one_chunk(line: &str, data: &str) -> String {
    format!("{line}\r\n{data}\r\n0\r\n\r\n")
}

pub fn requests() -> Vec<Probe> {
    let mut p = Vec::new();
    framing_conflicts(&mut p);
    codings(&mut p);
    connection_listed(&mut p);
    line_endings(&mut p);
    pipelining(&mut p);
    http10_hosts_and_targets(&mut p);
    lengths(&mut p);
    chunks(&mut p);
    trailers_and_heads(&mut p);
    p
}

fn framing_conflicts(p: &mut Vec<Probe>) {
    let te_body = format!("0\r\n\r\n{SMUGGLED}");
    for (name, fields) in [
        (
            "CL.TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
        ),
        (
            "CL.TE mixed case",
            "content-LENGTH: 6\r\nTRANSFER-encoding: chunked\r\n",
        ),
        (
            "CL.TE, TE padded",
            "Content-Length: 6\r\nTransfer-Encoding:   chunked  \r\n",
        ),
        (
            "CL.TE, CL 0",
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "CL.TE, TE in two fields",
            "Content-Length: 6\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "CL.CL.TE",
            "Content-Length: 6\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        ),
    ] {
        p.push(probe(
            name,
            post("/c", fields, &te_body),
            Expect::Refuse(400),
        ));
    }
    let lf = format!(
        "POST /c HTTP/1.1\nHost: probe\nContent-Length: 6\nTransfer-Encoding: chunked\n\n{te_body}"
    );
    p.push(probe("CL.TE, bare LF head", lf, Expect::Refuse(400)));
    let lf = format!(
        "POST /c HTTP/1.1\nHost: probe\nTransfer-Encoding: chunked\nContent-Length: 6\n\n{te_body}"
    );
    p.push(probe("TE.CL, bare LF head", lf, Expect::Refuse(400)));
    let conflict = post(
        "/c",
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        &te_body,
    );
    p.push(probe(
        "CL.TE pipelined behind a GET",
        format!("{}{conflict}", get("/a")),
        Expect::Then(vec![want("GET", "/a", "")], 400),
    ));
    p.push(probe(
        "CL.TE pipelined behind a POST",
        format!("{}{conflict}", post("/a", "Content-Length: 3\r\n", "abc")),
        Expect::Then(vec![want("POST", "/a", "abc")], 400),
    ));
    p.push(probe(
        "CL.TE pipelined behind a chunked POST",
        format!(
            "{}{conflict}",
            post(
                "/a",
                "Transfer-Encoding: chunked\r\n",
                &one_chunk("3", "abc")
            )
        ),
        Expect::Then(vec![want("POST", "/a", "abc")], 400),
    ));
    let lf_conflict = format!(
        "POST /c HTTP/1.1\nHost: probe\nContent-Length: 6\nTransfer-Encoding: chunked\n\n{te_body}"
    );
    p.push(probe(
        "bare-LF CL.TE pipelined behind a POST",
        format!(
            "{}{lf_conflict}",
            post("/a", "Content-Length: 3\r\n", "abc")
        ),
        Expect::Then(vec![want("POST", "/a", "abc")], 400),
    ));
}

fn codings(p: &mut Vec<Probe>) {
    let body = one_chunk("5", "hello");
    for (name, fields, status) in [
        ("TE xchunked", "Transfer-Encoding: xchunked\r\n", 400),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            400,
        ),
        (
            "TE gzip, chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        (
            "TE gzip + chunked fields",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        (
            "TE chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        (
            "TE chunked + chunked fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "TE quoted chunked",
            "Transfer-Encoding: \"chunked\"\r\n",
            400,
        ),
        (
            "TE chunked with a parameter",
            "Transfer-Encoding: chunked;q=1\r\n",
            400,
        ),
        ("TE empty", "Transfer-Encoding: \r\n", 400),
        (
            "TE space before colon",
            "Transfer-Encoding : chunked\r\n",
            400,
        ),
        (
            "TE vertical tab in name",
            "Transfer-Encoding\x0b: chunked\r\n",
            400,
        ),
        (
            "TE obs-folded",
            "X-A: 1\r\n Transfer-Encoding: chunked\r\n",
            400,
        ),
    ] {
        p.push(probe(
            name,
            post("/t", fields, &body),
            Expect::Refuse(status),
        ));
    }
    for (name, fields) in [
        ("TE with a tab", "Transfer-Encoding:\tchunked\r\n"),
        ("TE trailing space", "Transfer-Encoding: chunked \r\n"),
        ("TE upper case", "Transfer-Encoding: CHUNKED\r\n"),
    ] {
        p.push(probe(
            name,
            post("/t", fields, &body),
            Expect::Forward(vec![want("POST", "/t", "hello")]),
        ));
    }
    p.push(probe(
        "Transfer_Encoding is not Transfer-Encoding",
        post(
            "/t",
            "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
            "hello",
        ),
        Expect::Forward(vec![want("POST", "/t", "hello")]),
    ));
    p.push(probe(
        "TE in HTTP/1.0",
        format!("POST /t HTTP/1.0\r\nHost: probe\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
        Expect::Refuse(400),
    ));
}

fn connection_listed(p: &mut Vec<Probe>) {
    let full = SMUGGLED;
    let partial = "GET /smuggled HTTP/1.1\r\nHost: probe\r\nX-Partial: ";
    for (name, connection) in [
        ("Connection: content-length", "content-length"),
        ("Connection: Content-Length", "Content-Length"),
        ("Connection: close, content-length", "close, content-length"),
        (
            "Connection: keep-alive, content-length, x-a",
            "keep-alive, content-length, x-a",
        ),
        ("Connection: host", "host"),
        (
            "Connection: transfer-encoding, host",
            "transfer-encoding, host",
        ),
    ] {
        for (what, body) in [("a request", full), ("a partial request", partial)] {
            let fields = format!(
                "Connection: {connection}\r\nX-A: 1\r\nContent-Length: {}\r\n",
                body.len()
            );
            p.push(probe(
                format!("{name}, body holds {what}"),
                post("/c", &fields, body),
                Expect::Forward(vec![want("POST", "/c", body)]),
            ));
        }
    }
    let fields = "Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n";
    let body = format!("{:x}\r\n{full}\r\n0\r\n\r\n", full.len());
    p.push(probe(
        "Connection: transfer-encoding, chunked body holds a request",
        post("/c", fields, &body),
        Expect::Forward(vec![want("POST", "/c", full)]),
    ));
    let fields = format!(
        "Connection: keep-alive\r\nConnection: content-length\r\nContent-Length: {}\r\n",
        partial.len()
    );
    p.push(probe(
        "two Connection fields, the second names content-length",
        post("/c", &fields, partial),
        Expect::Forward(vec![want("POST", "/c", partial)]),
    ));
    let fields = format!(
        "Connection: content-length\r\nContent-Length: {}\r\n",
        partial.len()
    );
    p.push(probe(
        "Connection: content-length after a plain GET",
        format!("{}{}", get("/p"), post("/c", &fields, partial)),
        Expect::Forward(vec![want("GET", "/p", ""), want("POST", "/c", partial)]),
    ));
    p.push(probe(
        "Connection: content-length in HTTP/1.0",
        format!(
            "POST /c HTTP/1.0\r\nHost: probe\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{partial}",
            partial.len()
        ),
        Expect::Forward(vec![want("POST", "/c", partial)]),
    ));
    p.push(probe(
        "Connection: content-length with length 0, then a request",
        format!(
            "{}{full}",
            post(
                "/c",
                "Connection: content-length\r\nContent-Length: 0\r\n",
                ""
            )
        ),
        Expect::Forward(vec![want("POST", "/c", ""), want("GET", "/smuggled", "")]),
    ));
}

fn line_endings(p: &mut Vec<Probe>) {
    p.push(probe(
        "bare LF GET",
        "GET /lf HTTP/1.1\nHost: probe\n\n",
        Expect::Forward(vec![want("GET", "/lf", "")]),
    ));
    p.push(probe(
        "bare LF POST with a length",
        "POST /lf HTTP/1.1\nHost: probe\nContent-Length: 5\n\nhello",
        Expect::Forward(vec![want("POST", "/lf", "hello")]),
    ));
    p.push(probe(
        "bare LF chunked POST",
        "POST /lf HTTP/1.1\nHost: probe\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n",
        Expect::Forward(vec![want("POST", "/lf", "hello")]),
    ));
    p.push(probe(
        "CR LF and bare LF mixed",
        "POST /lf HTTP/1.1\r\nHost: probe\nContent-Length: 5\r\n\nhello",
        Expect::Forward(vec![want("POST", "/lf", "hello")]),
    ));
    p.push(probe(
        "bare LF chunk lines",
        post("/lf", "Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
        Expect::Refuse(400),
    ));
    p.push(probe(
        "bare CR in the head",
        "GET /cr HTTP/1.1\rHost: probe\r\n\r\n",
        Expect::Refuse(400),
    ));
}

fn pipelining(p: &mut Vec<Probe>) {
    let post_cl = post("/b", "Content-Length: 5\r\n", "hello");
    let post_te = post(
        "/b",
        "Transfer-Encoding: chunked\r\n",
        &one_chunk("5", "hello"),
    );
    let looks = "GET /fake HTTP/1.1\r\nHost: probe\r\n\r\n";
    let post_looks = post("/b", &format!("Content-Length: {}\r\n", looks.len()), looks);
    let cases: Vec<(&str, Vec<String>, Vec<Want>)> = vec![
        (
            "GET, POST with a length, GET",
            vec![get("/a"), post_cl.clone(), get("/c")],
            vec![
                want("GET", "/a", ""),
                want("POST", "/b", "hello"),
                want("GET", "/c", ""),
            ],
        ),
        (
            "GET, chunked POST, GET",
            vec![get("/a"), post_te.clone(), get("/c")],
            vec![
                want("GET", "/a", ""),
                want("POST", "/b", "hello"),
                want("GET", "/c", ""),
            ],
        ),
        (
            "POST, GET, GET",
            vec![post_cl.clone(), get("/a"), get("/c")],
            vec![
                want("POST", "/b", "hello"),
                want("GET", "/a", ""),
                want("GET", "/c", ""),
            ],
        ),
        (
            "a body that looks like a request, then GET",
            vec![post_looks, get("/c")],
            vec![want("POST", "/b", looks), want("GET", "/c", "")],
        ),
        (
            "chunked, chunked, GET",
            vec![post_te.clone(), post_te.clone(), get("/c")],
            vec![
                want("POST", "/b", "hello"),
                want("POST", "/b", "hello"),
                want("GET", "/c", ""),
            ],
        ),
        (
            "100-continue POST, then GET",
            vec![
                post(
                    "/b",
                    "Expect: 100-continue\r\nContent-Length: 5\r\n",
                    "hello",
                ),
                get("/c"),
            ],
            vec![want("POST", "/b", "hello"), want("GET", "/c", "")],
        ),
        (
            "keep-alive GET, POST, GET",
            vec![
                "GET /a HTTP/1.1\r\nHost: probe\r\nConnection: keep-alive\r\n\r\n".into(),
                post_cl,
                get("/c"),
            ],
            vec![
                want("GET", "/a", ""),
                want("POST", "/b", "hello"),
                want("GET", "/c", ""),
            ],
        ),
        (
            "chunked with extensions, GET",
            vec![
                post(
                    "/b",
                    "Transfer-Encoding: chunked\r\n",
                    "2;a=b\r\nhe\r\n3;c\r\nllo\r\n0;d=\"e\"\r\n\r\n",
                ),
                get("/c"),
            ],
            vec![want("POST", "/b", "hello"), want("GET", "/c", "")],
        ),
    ];
    for (name, requests, wants) in cases {
        p.push(probe(name, requests.concat(), Expect::Forward(wants)));
    }
}

fn http10_hosts_and_targets(p: &mut Vec<Probe>) {
    p.push(probe(
        "HTTP/1.0 without Host",
        "GET /h10 HTTP/1.0\r\n\r\n",
        Expect::Forward(vec![want("GET", "/h10", "")]),
    ));
    p.push(probe(
        "HTTP/1.0 with Host",
        "GET /h10 HTTP/1.0\r\nHost: probe\r\n\r\n",
        Expect::Forward(vec![want("GET", "/h10", "")]),
    ));
    p.push(probe(
        "HTTP/1.0 POST with a length",
        "POST /h10 HTTP/1.0\r\nHost: probe\r\nContent-Length: 5\r\n\r\nhello",
        Expect::Forward(vec![want("POST", "/h10", "hello")]),
    ));
    p.push(probe(
        "HTTP/1.0 keep-alive, two requests",
        "GET /a HTTP/1.0\r\nHost: probe\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: probe\r\n\r\n",
        Expect::Forward(vec![want("GET", "/a", ""), want("GET", "/b", "")]),
    ));
    for (name, host) in [
        ("Host with a space", "a b"),
        ("Host with a slash", "a/b"),
        ("Host with userinfo", "user@probe"),
        ("Host list", "probe,other"),
        ("Host with a named port", "probe:http"),
        ("Host empty", ""),
        ("Host port only", ":80"),
        ("Host two ports", "probe:80:80"),
    ] {
        let bytes = format!("GET /h HTTP/1.1\r\nHost: {host}\r\n\r\n");
        p.push(probe(name, bytes, Expect::Refuse(400)));
    }
    for (name, bytes) in [
        (
            "two Hosts",
            "GET /h HTTP/1.1\r\nHost: probe\r\nHost: other\r\n\r\n",
        ),
        ("HTTP/1.1 without Host", "GET /h HTTP/1.1\r\n\r\n"),
        (
            "absolute form, other host",
            "GET http://other/abs HTTP/1.1\r\nHost: probe\r\n\r\n",
        ),
        (
            "authority form on GET",
            "GET probe:80 HTTP/1.1\r\nHost: probe\r\n\r\n",
        ),
        (
            "CONNECT",
            "CONNECT probe:443 HTTP/1.1\r\nHost: probe:443\r\n\r\n",
        ),
        (
            "non-ASCII target",
            "GET /\u{e9} HTTP/1.1\r\nHost: probe\r\n\r\n",
        ),
        (
            "asterisk form on GET",
            "GET * HTTP/1.1\r\nHost: probe\r\n\r\n",
        ),
    ] {
        p.push(probe(name, bytes, Expect::Refuse(400)));
    }
    for (name, bytes, target) in [
        (
            "absolute form, same host",
            "GET http://probe/abs HTTP/1.1\r\nHost: probe\r\n\r\n",
            "/abs",
        ),
        (
            "Host with a port",
            "GET /port HTTP/1.1\r\nHost: probe:8080\r\n\r\n",
            "/port",
        ),
        (
            "Host an IPv6 literal",
            "GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            "/v6",
        ),
        (
            "double slash target",
            "GET //double HTTP/1.1\r\nHost: probe\r\n\r\n",
            "//double",
        ),
        (
            "encoded target",
            "GET /a%20b?c=d%26e HTTP/1.1\r\nHost: probe\r\n\r\n",
            "/a%20b?c=d%26e",
        ),
    ] {
        p.push(probe(
            name,
            bytes,
            Expect::Forward(vec![want("GET", target, "")]),
        ));
    }
}

fn lengths(p: &mut Vec<Probe>) {
    for (name, length) in [
        ("CL +5", "+5"),
        ("CL -1", "-1"),
        ("CL 5 5", "5 5"),
        ("CL 0x5", "0x5"),
        ("CL list of equal values", "5, 5"),
        ("CL 20 digits", "99999999999999999999"),
        ("CL empty", ""),
    ] {
        let fields = format!("Content-Length: {length}\r\n");
        p.push(probe(
            name,
            post("/l", &fields, "hello"),
            Expect::Refuse(400),
        ));
    }
    p.push(probe(
        "two differing CL fields",
        post("/l", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        Expect::Refuse(400),
    ));
    for (name, fields) in [
        (
            "two equal CL fields",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("CL with leading zeros", "Content-Length: 005\r\n"),
        ("CL without a space", "Content-Length:5\r\n"),
    ] {
        p.push(probe(
            name,
            post("/l", fields, "hello"),
            Expect::Forward(vec![want("POST", "/l", "hello")]),
        ));
    }
    p.push(probe(
        "CL 0",
        post("/l", "Content-Length: 0\r\n", ""),
        Expect::Forward(vec![want("POST", "/l", "")]),
    ));
}

fn chunks(p: &mut Vec<Probe>) {
    for (name, line) in [
        ("chunk size +5", "+5"),
        ("chunk size with a leading space", " 5"),
        ("chunk size with a trailing space", "5 "),
        ("chunk extension with a bad byte", "5;a<"),
        ("chunk extension with a bare CR", "5;a\rb"),
        ("chunk size 0x5", "0x5"),
        ("chunk size of 17 digits", "00000000000000005"),
        ("chunk extension without a name", "5;"),
        ("chunk extension value unclosed", "5;a=\"b"),
    ] {
        let bytes = post(
            "/k",
            "Transfer-Encoding: chunked\r\n",
            &one_chunk(line, "hello"),
        );
        p.push(probe(name, bytes, Expect::Refuse(400)));
    }
    p.push(probe(
        "chunk data longer than its size",
        post(
            "/k",
            "Transfer-Encoding: chunked\r\n",
            "3\r\nhello\r\n0\r\n\r\n",
        ),
        Expect::Refuse(400),
    ));
    p.push(probe(
        "last chunk with bare LFs",
        post(
            "/k",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\n\n",
        ),
        Expect::Refuse(400),
    ));
    for (name, body) in [
        ("chunk extension token value", one_chunk("5;a=b", "hello")),
        (
            "chunk extension quoted value",
            one_chunk("5;a=\"b c\"", "hello"),
        ),
        (
            "chunk extension with spaces",
            one_chunk("5 ; a = b", "hello"),
        ),
        (
            "chunk size upper case",
            "A\r\nhellohello\r\n0\r\n\r\n".to_owned(),
        ),
        ("chunk size with leading zeros", one_chunk("0005", "hello")),
        (
            "last chunk with an extension",
            "5\r\nhello\r\n0;x=y\r\n\r\n".to_owned(),
        ),
    ] {
        let data = if name == "chunk size upper case" {
            "hellohello"
        } else {
            "hello"
        };
        p.push(probe(
            name,
            post("/k", "Transfer-Encoding: chunked\r\n", &body),
            Expect::Forward(vec![want("POST", "/k", data)]),
        ));
    }
    p.push(probe(
        "a request after the last chunk",
        format!(
            "{}{SMUGGLED}",
            post(
                "/k",
                "Transfer-Encoding: chunked\r\n",
                &one_chunk("5", "hello")
            )
        ),
        Expect::Forward(vec![
            want("POST", "/k", "hello"),
            want("GET", "/smuggled", ""),
        ]),
    ));
}

fn trailers_and_heads(p: &mut Vec<Probe>) {
    for (name, trailer) in [
        ("trailer Content-Length", "Content-Length: 50"),
        ("trailer Transfer-Encoding", "Transfer-Encoding: chunked"),
        ("trailer Host", "Host: evil"),
        ("trailer Connection", "Connection: close"),
        ("trailer Keep-Alive", "Keep-Alive: timeout=1"),
        ("trailer ordinary field", "X-Checksum: 1"),
    ] {
        let body = format!("5\r\nhello\r\n0\r\n{trailer}\r\n\r\n");
        p.push(probe(
            name,
            post(
                "/tr",
                "Transfer-Encoding: chunked\r\nTE: trailers\r\n",
                &body,
            ),
            Expect::Forward(vec![want("POST", "/tr", "hello")]),
        ));
    }
    p.push(probe(
        "trailer ended by a bare LF",
        post(
            "/tr",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\nX-A: 1\n\r\n",
        ),
        Expect::Refuse(400),
    ));
    let many: String = (0..120).map(|i| format!("X-{i}: {i}\r\n")).collect();
    for (name, bytes, status) in [
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: probe\r\nX-A: 1\r\n  more\r\n\r\n".to_owned(),
            400,
        ),
        (
            "space in a field name",
            "GET / HTTP/1.1\r\nHost: probe\r\nX A: 1\r\n\r\n".into(),
            400,
        ),
        (
            "NUL in a field value",
            "GET / HTTP/1.1\r\nHost: probe\r\nX-A: a\0b\r\n\r\n".into(),
            400,
        ),
        ("garbage request line", "GARBAGE\r\n\r\n".into(), 400),
        (
            "HTTP/9.9",
            "GET / HTTP/9.9\r\nHost: probe\r\n\r\n".into(),
            400,
        ),
        (
            "a fourth word on the request line",
            "GET / HTTP/1.1 x\r\nHost: probe\r\n\r\n".into(),
            400,
        ),
        (
            "120 fields",
            format!("GET / HTTP/1.1\r\nHost: probe\r\n{many}\r\n"),
            431,
        ),
    ] {
        p.push(probe(name, bytes, Expect::Refuse(status)));
    }
    p.push(probe(
        "Upgrade without Connection: upgrade",
        post("/u", "Upgrade: websocket\r\nContent-Length: 5\r\n", "hello"),
        Expect::Forward(vec![want("POST", "/u", "hello")]),
    ));
}
