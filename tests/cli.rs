//! SPEC §1 and §2 from the outside: the binary, its exit codes and messages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "support/wait.rs"]
mod wait;
use wait::eventually_blocking;

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn fulcrum(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FULCRUM_CONFIG")
        .output()
        .unwrap()
}

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Kills the child on drop, so a failed test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit within `limit`; returns the exit code.
    fn wait_exit(&mut self, limit: Duration) -> i32 {
        eventually_blocking(limit, || {
            let status = self.0.try_wait().unwrap()?;
            Some(status.code().unwrap_or(-1))
        })
    }
}

/// Starts `fulcrum run` and reads stderr until it logs its first listening
/// address.
fn start(config: &Path) -> (Running, String) {
    let (running, mut lines) = spawn(&["-c", config.to_str().unwrap(), "run"], Output::Stderr);
    let addr = lines
        .by_ref()
        .find_map(|line| address_in(&line, "listening"))
        .expect("fulcrum logged its address");
    drain(lines);
    (running, addr)
}

/// Which of the child's outputs to read.
enum Output {
    Stdout,
    Stderr,
}

/// Starts the binary with `args` and returns it with the lines of `output`.
fn spawn(args: &[&str], output: Output) -> (Running, impl Iterator<Item = String> + use<>) {
    let mut command = Command::new(BIN);
    command.args(args).env("FULCRUM_LOG", "info");
    let mut child = match output {
        Output::Stdout => command.stdout(Stdio::piped()).stderr(Stdio::null()),
        Output::Stderr => command.stderr(Stdio::piped()).stdout(Stdio::null()),
    }
    .spawn()
    .unwrap();
    let pipe: Box<dyn std::io::Read + Send> = match output {
        Output::Stdout => Box::new(child.stdout.take().unwrap()),
        Output::Stderr => Box::new(child.stderr.take().unwrap()),
    };
    let lines = BufReader::new(pipe).lines().map(Result::unwrap);
    (Running(child), lines)
}

/// The `addr=` value of a log line containing `needle`.
fn address_in(line: &str, needle: &str) -> Option<String> {
    let i = line.find("addr=").filter(|_| line.contains(needle))?;
    Some(line[i + 5..].split_whitespace().next()?.to_string())
}

/// Keeps reading so the child never blocks on a full pipe.
fn drain(lines: impl Iterator<Item = String> + Send + 'static) {
    std::thread::spawn(move || for _ in lines {});
}

fn http_get(addr: &str, path: &str) -> String {
    http_get_with(addr, path, "")
}

/// A GET with `headers` (each ending in CRLF); the whole response.
fn http_get_with(addr: &str, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: demo\r\n{headers}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The first word of a response's last line (the demo endpoints' name).
fn first_word_of_last_line(response: &str) -> String {
    let last = response.lines().last().unwrap_or_default();
    last.split(' ').next().unwrap_or_default().to_string()
}

#[test]
fn version_and_help() {
    let out = fulcrum(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("fulcrum {}", env!("CARGO_PKG_VERSION"))
    );
    let out = fulcrum(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "demo", "--config"] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn check_accepts_every_shipped_config() {
    let mut files = vec![repo("config/fulcrum.toml")];
    for entry in std::fs::read_dir(repo("config/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 4);
    for file in files {
        let out = fulcrum(&["-c", file.to_str().unwrap(), "check"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for section in ["listeners (", "routes (", "upstreams ("] {
            assert!(stdout.contains(section), "{stdout}");
        }
        // Nothing in a shipped config draws a warning.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("warning"), "{}: {stderr}", file.display());
    }
}

#[test]
fn check_warns_of_a_route_that_never_matches_and_an_unused_upstream() {
    let (_dir, path) = write_config(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
         [[route]]\nupstream = \"u\"\n[[route]]\nupstream = \"u\"\n\
         [upstream.u]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n\
         [upstream.spare]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let out = fulcrum(&["-c", path.to_str().unwrap(), "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let file = path.display();
    assert!(
        stderr.contains(&format!(
            "warning: {file}:6:1: route[1]: never matches: route `route0` before it"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: {file}:10:11: upstream.spare: no route uses this upstream"
        )),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_error_with_file_line_column_and_key() {
    let (_dir, path) = write_config(
        r#"[server]
idle_timeout = "soon"

[[listener]]
name = "http"
bind = "127.0.0.1:0"
colour = "blue"

[[listener]]
name = "http"
bind = "127.0.0.1:1"

[[route]]
upstream = "missing"

[upstream.api]
retries = 11
endpoints = []
"#,
    );
    let out = fulcrum(&["-c", path.to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    let expected = [
        format!("{file}:2:16: server.idle_timeout: "),
        format!("{file}:7:1: listener[0].colour: unknown key"),
        format!("{file}:10:8: listener[1].name: duplicate listener name `http`"),
        format!("{file}:14:12: route[0].upstream: no upstream is named `missing`"),
        format!("{file}:17:11: upstream.api.retries: must be between 0 and 10"),
        format!("{file}:18:13: upstream.api.endpoints: must not be empty"),
    ];
    for e in &expected {
        assert!(
            stderr.lines().any(|l| l.starts_with(e.as_str())),
            "missing {e:?} in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), expected.len(), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_keys_point_at_the_table_header() {
    let (_dir, path) = write_config("[[listener]]\nname = \"a\"\n\n[[route]]\nname = \"r\"\n");
    let out = fulcrum(&["-c", path.to_str().unwrap(), "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:1:1: listener[0].bind: required key is missing"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:4:1: route[0].upstream: required key is missing"
        )),
        "{stderr}"
    );
}

#[test]
fn config_comes_from_the_environment_and_a_missing_file_is_named() {
    let out = Command::new(BIN)
        .arg("check")
        .env("FULCRUM_CONFIG", repo("config/examples/one-site.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("one-site.toml: valid"));
    let out = fulcrum(&["-c", "/nonexistent/fulcrum.toml", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fulcrum.toml: cannot read")
    );
}

#[test]
fn a_port_that_cannot_be_bound_is_a_start_error_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, path) = write_config(&format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"front\"\nbind = \"127.0.0.1:{port}\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"127.0.0.1:9\" }}]\n"
    ));
    let out = fulcrum(&["-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listener front: cannot bind 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn run_serves_until_sigterm_then_exits_zero() {
    let backend_addr = named_endpoint("ok");
    let (_dir, path) = write_config(&format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{backend_addr}\" }}]\n"
    ));
    for signal in ["TERM", "INT"] {
        let (mut child, addr) = start(&path);
        let response = http_get(&addr, "/");
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("ok"),
            "{response}"
        );
        // SIGHUP must not kill it.
        child.signal("HUP");
        assert!(http_get(&addr, "/").starts_with("HTTP/1.1 200"));
        child.signal(signal);
        assert_eq!(
            child.wait_exit(Duration::from_secs(10)),
            0,
            "exit code after SIG{signal}"
        );
    }
}

#[test]
fn workers_serve_connections_on_threads_of_their_own() {
    use std::io::{Read, Write};
    let backend_addr = named_endpoint("ok");
    let (_dir, path) = write_config(&format!(
        "[server]\nworkers = 3\n[admin]\nbind = \"\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{backend_addr}\" }}]\n"
    ));
    let (mut child, addr) = start(&path);
    // A thread names itself once it runs: wait for all three, within a bound.
    let workers = || {
        std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("fulcrum-worker"))
            .count()
    };
    eventually_blocking(Duration::from_secs(5), || workers() == 3);
    // Connections go to the workers in turn; each serves its requests over
    // keep-alive, and the endpoint pools work from every thread.
    let mut clients: Vec<std::net::TcpStream> = (0..6)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    for round in 0..3 {
        for (i, s) in clients.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok")) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "connection {i} closed in round {round}");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "connection {i} round {round}"
            );
        }
    }
    child.signal("TERM");
    assert_eq!(child.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_signal_as_soon_as_listening_is_logged_is_a_graceful_exit() {
    // The listeners accept before `serve` finishes its setup; the handlers
    // must already be there (they once were installed only at its end).
    let backend_addr = named_endpoint("ok");
    let (_dir, path) = write_config(&format!(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{backend_addr}\" }}]\n"
    ));
    for signal in ["TERM", "INT", "TERM", "INT", "TERM"] {
        let (mut child, _addr) = start(&path);
        child.signal(signal);
        assert_eq!(
            child.wait_exit(Duration::from_secs(10)),
            0,
            "exit code after SIG{signal} right after start"
        );
    }
}

#[test]
fn demo_balances_across_three_endpoints() {
    let (mut running, mut lines) = spawn(&["demo"], Output::Stdout);
    let mut printed = String::new();
    let addr = loop {
        let line = lines.next().expect("demo prints its address");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.strip_prefix("fulcrum demo: proxy on http://") {
            break rest.split(',').next().unwrap().to_string();
        }
    };
    for line in lines.by_ref() {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(
        printed.contains(&format!("curl -s http://{addr}/")),
        "{printed}"
    );
    let names: Vec<String> = (0..6)
        .map(|_| first_word_of_last_line(&http_get(&addr, "/")))
        .collect();
    for name in ["alpha", "beta", "gamma"] {
        assert_eq!(names.iter().filter(|n| *n == name).count(), 2, "{names:?}");
    }
    // The sticky route keeps each user on one endpoint.
    assert!(printed.contains("/sticky"), "{printed}");
    let sticky = |user: &str| {
        first_word_of_last_line(&http_get_with(
            &addr,
            "/sticky",
            &format!("x-user-id: {user}\r\n"),
        ))
    };
    for user in ["alice", "bob", "carol", "dave"] {
        let first = sticky(user);
        assert!(
            ["alpha", "beta", "gamma"].contains(&first.as_str()),
            "{first}"
        );
        for _ in 0..3 {
            assert_eq!(sticky(user), first, "{user}");
        }
    }
    running.signal("INT");
    assert_eq!(running.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn check_accepts_every_algorithm_of_the_schema() {
    for (balance, key) in [
        ("random", ""),
        ("least_requests", ""),
        ("peak_ewma", ""),
        (
            "consistent_hash",
            "hash_key = \"cookie:session\"\nbounded_load = 1.25",
        ),
        ("maglev", "hash_key = \"client_ip\""),
    ] {
        let (_dir, path) = write_config(&format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nbalance = \"{balance}\"\n{key}\nendpoints = [{{ address = \"127.0.0.1:9\" }}]\n"
        ));
        let out = fulcrum(&["-c", path.to_str().unwrap(), "check"]);
        assert!(
            out.status.success(),
            "{balance}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(balance));
    }
}

/// A loopback endpoint on its own thread that answers every request with
/// `name` and closes the connection.
fn named_endpoint(name: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                name.len()
            );
        }
    });
    addr
}

#[test]
fn two_processes_on_the_same_config_map_keys_identically() {
    let names = ["e1", "e2", "e3", "e4", "e5"];
    let endpoints: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{{ address = \"{}\", weight = {} }}",
                named_endpoint(n),
                i % 2 + 1
            )
        })
        .collect();
    for balance in ["consistent_hash", "maglev"] {
        let (_dir, path) = write_config(&format!(
            "[admin]\nbind = \"\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nbalance = \"{balance}\"\nhash_key = \"header:x-user\"\nendpoints = [{}]\n",
            endpoints.join(", ")
        ));
        let (_first, a) = start(&path);
        let (_second, b) = start(&path);
        let ask = |addr: &str, key: usize| {
            let response = http_get_with(addr, "/", &format!("x-user: user-{key}\r\n"));
            response.rsplit("\r\n").next().unwrap().to_string()
        };
        let mut spread = std::collections::BTreeMap::new();
        for key in 0..1000 {
            let (x, y) = (ask(&a, key), ask(&b, key));
            assert_eq!(x, y, "{balance}: key user-{key}");
            *spread.entry(x).or_insert(0) += 1;
        }
        assert_eq!(spread.len(), names.len(), "{balance}: {spread:?}");
    }
}

#[test]
fn check_rejects_a_public_admin_bind_without_a_token() {
    let (_dir, path) = write_config(
        "[admin]\nbind = \"0.0.0.0:9901\"\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let out = fulcrum(&["-c", path.to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:1:1: admin.token: required when admin.bind (0.0.0.0:9901) is not a loopback address", path.display())),
        "{stderr}"
    );
}

#[test]
fn sighup_reloads_the_config() {
    let (_dir, path) = write_config(
        "[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let (mut running, mut lines) = spawn(&["-c", path.to_str().unwrap()], Output::Stderr);
    let admin = lines
        .by_ref()
        .find_map(|line| address_in(&line, "admin API listening"))
        .expect("fulcrum logged the admin address");
    drain(lines);
    let generation = || {
        let body = http_get(&admin, "/status");
        let json = body
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        serde_json::from_str::<serde_json::Value>(&json)
            .map(|v| v["generation"].as_u64())
            .ok()
            .flatten()
    };
    assert_eq!(generation(), Some(1));
    // The file is unchanged: a SIGHUP still reloads (a new generation).
    running.signal("HUP");
    // No reload after SIGHUP fails here.
    eventually_blocking(Duration::from_secs(10), || generation() == Some(2));
    running.signal("TERM");
    assert_eq!(running.wait_exit(Duration::from_secs(10)), 0);
}

/// Connections past the process's descriptor limit: every failed accept
/// is counted, the warning is logged once per listener (not once per
/// failure: a flood must not fill the log, nor spin the admin API's accept
/// loop), and the listener serves again once descriptors are free.
#[test]
fn failed_accepts_are_counted_and_warned_of_once() {
    let backend_addr = named_endpoint("ok");
    let (_dir, path) = write_config(&format!(
        "[server]\nworkers = 1\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{{ address = \"{backend_addr}\" }}]\n"
    ));
    // A shell sets the limit (the crate forbids the `unsafe` of a
    // `pre_exec`); 64 descriptors leave room for the runtime, the
    // listeners and a few connections.
    let script = format!("ulimit -n 64 && exec {BIN} -c {} run", path.display());
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("FULCRUM_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut log = Log::of(child.stderr.take().unwrap());
    let _running = Running(child);
    let addr = address_in(&log.wait_for("listener=http "), "").unwrap();
    let admin = address_in(&log.wait_for("admin API listening"), "").unwrap();
    // The admin connection is taken before the descriptors run out, and
    // kept: scrapes on it need no accept.
    let mut scraper = std::net::TcpStream::connect(&admin).unwrap();
    scraper
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut failures = || {
        let metrics = keep_alive_get(&mut scraper, "/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("fulcrum_downstream_accept_errors_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        failures().unwrap_or(0.0),
        0.0,
        "no failure before the flood"
    );
    // More connections than descriptors: the kernel completes them all
    // (the backlog), fulcrum's accepts fail once its table is full.
    let flood: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // It goes on failing (one try every 50 ms) while the flood holds.
    let counted = eventually_blocking(Duration::from_secs(10), || failures().filter(|&n| n >= 3.0));
    // The admin API's accept fails too, and goes on failing while the
    // listener's fails twice more (both retry every 50 ms).
    let queued = std::net::TcpStream::connect(&admin).unwrap();
    log.wait_for("accept failed listener=admin");
    let counted = eventually_blocking(Duration::from_secs(10), || {
        failures().filter(|&n| n >= counted + 2.0)
    });
    drop((flood, queued));
    // Served again once descriptors are free (the flood's connections
    // close), and one warning per listener for all the failures.
    eventually_blocking(Duration::from_secs(10), || {
        http_get(&addr, "/").starts_with("HTTP/1.1 200")
    });
    let seen = log.so_far();
    for listener in ["http", "admin"] {
        let needle = format!("accept failed listener={listener} ");
        let warnings = seen.iter().filter(|l| l.contains(&needle)).count();
        assert_eq!(warnings, 1, "{listener}: {counted} failures; {seen:#?}");
    }
}

/// A child's log, read on a thread of its own as it comes.
struct Log {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn of(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line containing `needle`, within 10 s.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no line with {needle:?} in {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every line so far.
    fn so_far(mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

/// A GET on a kept connection; the body, read by its framing (length or
/// chunks).
fn keep_alive_get(s: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let lower = line.trim_end().to_ascii_lowercase();
        if lower.is_empty() {
            break;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>().unwrap());
        }
        chunked |= lower == "transfer-encoding: chunked";
    }
    let mut body = Vec::new();
    if let Some(n) = length.filter(|_| !chunked) {
        body.resize(n, 0);
        reader.read_exact(&mut body).unwrap();
    } else {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    String::from_utf8(body).unwrap()
}
