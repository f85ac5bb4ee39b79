//! The packaging in `deploy/` agrees with itself and with fulcrum: the
//! systemd unit passes `systemd-analyze verify`, the container image's
//! config and health check match, and every Kubernetes manifest parses as
//! YAML with ports, probes and paths that agree with the config it mounts.

#![allow(clippy::print_stderr)] // says why a check was skipped

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// The value of `key=` lines in a systemd unit, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_systemd_unit_sandboxes_reloads_and_verifies() {
    let unit = read("deploy/systemd/fulcrum.service");
    for (key, value) in [
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("ConfigurationDirectory", "fulcrum"),
    ] {
        assert_eq!(unit_values(&unit, key), [value], "{key}");
    }
    let start = unit_values(&unit, "ExecStart");
    assert_eq!(
        start,
        ["/usr/local/bin/fulcrum -c /etc/fulcrum/fulcrum.toml run"]
    );
    // systemd waits longer than the drain before it kills.
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let shipped = fulcrum::config::load(&repo("config/fulcrum.toml")).unwrap();
    assert!(Duration::from_secs(stop) > shipped.server.shutdown_timeout);

    // `systemd-analyze verify` checks the unit as systemd would load it;
    // it needs the binary to exist, so the test's own build stands in.
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fulcrum.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/fulcrum", env!("CARGO_BIN_EXE_fulcrum")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("fulcrum.service"),
        "systemd-analyze has remarks on the unit:\n{stderr}"
    );
}

#[test]
fn the_container_image_checks_the_admin_api_its_config_opens() {
    let dockerfile = read("deploy/docker/Dockerfile");
    let config = fulcrum::config::load(&repo("deploy/docker/fulcrum.toml")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[1].contains("-slim"), "{}", stages[1]);
    assert!(dockerfile.lines().any(|l| l == "USER 10001"));
    assert!(dockerfile.contains("VOLUME [\"/etc/fulcrum\"]"));
    assert!(dockerfile.contains("COPY deploy/docker/fulcrum.toml /etc/fulcrum/fulcrum.toml"));
    assert!(dockerfile.contains("ENV FULCRUM_CONFIG=/etc/fulcrum/fulcrum.toml"));
    let admin = config.admin.bind.expect("the admin API is on");
    assert!(
        dockerfile.contains(&format!("curl -fsS http://{admin}/readyz")),
        "the health check asks the config's admin API ({admin})"
    );
    let listener = config.listeners[0].bind;
    assert!(dockerfile.contains(&format!("EXPOSE {}", listener.port())));
}

/// Every document of every manifest in `deploy/kubernetes/`, by kind.
fn manifests() -> Vec<Yaml> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.extend(parsed);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let mut found = docs.iter().filter(|d| d["kind"].as_str() == Some(kind));
    let doc = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "one {kind}");
    doc
}

/// A container port by name or number.
fn port(container: &Yaml, port: &Yaml) -> i64 {
    match port.as_str() {
        Some(name) => container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no port named {name}")),
        None => port.as_i64().unwrap(),
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_the_config_they_mount() {
    let docs = manifests();
    assert_eq!(
        docs.len(),
        4,
        "ConfigMap, Deployment, Service, PodDisruptionBudget"
    );
    let configmap = of_kind(&docs, "ConfigMap");
    let deployment = of_kind(&docs, "Deployment");
    let service = of_kind(&docs, "Service");
    let pdb = of_kind(&docs, "PodDisruptionBudget");

    // The config validates, and is mounted as the config directory.
    let name = configmap["metadata"]["name"].as_str().unwrap();
    let text = configmap["data"]["fulcrum.toml"].as_str().unwrap();
    let config = fulcrum::config::parse(Path::new("/etc/fulcrum/fulcrum.toml"), text).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["-c", "/etc/fulcrum/fulcrum.toml", "run"]);
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some("/etc/fulcrum"));
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"].as_str(), Some(name));

    // Ports: the listener's and the admin API's.
    let listener: SocketAddr = config.listeners[0].bind;
    let admin = config.admin.bind.expect("the admin API is on");
    assert!(
        !admin.ip().is_loopback(),
        "the kubelet reaches the pod's address"
    );
    assert_eq!(
        port(container, &Yaml::String("http".into())),
        i64::from(listener.port())
    );
    assert_eq!(
        port(container, &Yaml::String("admin".into())),
        i64::from(admin.port())
    );

    // Probes: readiness on /readyz, liveness on /healthz, at the admin port,
    // with the config's token.
    let token = config.admin.token.as_deref().expect("a token off loopback");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            port(container, &get["port"]),
            i64::from(admin.port()),
            "{probe}"
        );
        let header = &get["httpHeaders"][0];
        assert_eq!(header["name"].as_str(), Some("Authorization"));
        assert_eq!(
            header["value"].as_str(),
            Some(format!("Bearer {token}").as_str())
        );
    }

    // The drain finishes before the pod is killed.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(Duration::from_secs(grace as u64) > config.server.shutdown_timeout);

    // The Service and the budget select the Deployment's pods; the Service
    // sends to the listener.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(port(container, target), i64::from(listener.port()));
}
