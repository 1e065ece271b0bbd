//! The deployment files in `deploy/` (see `docs/deploy.md`), checked as far as this machine
//! allows: every flag they give the node exists in `iris --help`, the YAML parses and its
//! parts fit together, and the systemd unit passes `systemd-analyze verify` where systemd
//! is installed. (Building the container needs its base images from a registry, which a
//! test cannot reach.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

/// The long flags `iris --help` lists.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_iris"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    flags_in(&String::from_utf8(out.stdout).unwrap())
}

/// Every `--flag` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .collect()
}

fn assert_known(used: &BTreeSet<String>, file: &str) {
    let known = help_flags();
    assert!(!used.is_empty(), "{file}: no flags found");
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses flags iris does not have: {unknown:?}"
    );
}

#[test]
fn the_systemd_unit_is_sandboxed_and_gives_only_flags_iris_has() {
    let (path, unit) = deploy("systemd/iris.service");
    let (_, env) = deploy("systemd/iris.env");
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    let mut used = flags_in(exec);
    let extra = env
        .lines()
        .find(|l| l.starts_with("IRIS_FLAGS="))
        .expect("IRIS_FLAGS");
    used.extend(flags_in(extra.trim_start_matches("IRIS_FLAGS=")));
    assert_known(&used, "systemd/iris.service and iris.env");
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LoadCredential=network-key:/etc/iris/network.pem",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // The key comes from the credential, never the environment or a world-readable path.
    assert!(exec.contains("--rsa %d/network-key"), "{exec}");
    // Every variable the unit uses is set by the environment file.
    for var in ["IRIS_NET", "IRIS_PEER_BIND", "IRIS_ADVERTISE", "IRIS_FLAGS"] {
        assert!(
            env.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var}"
        );
    }
    // systemd's own check, on a copy that starts the binary just built.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not verified");
        return;
    }
    let dir = std::env::temp_dir().join(format!("iris-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("iris.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/iris", env!("CARGO_BIN_EXE_iris")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{}: {said}",
        path.display()
    );
}

#[test]
fn the_container_builds_the_iris_binary_and_runs_it_unprivileged() {
    let (_, file) = deploy("container/Dockerfile");
    assert!(file.contains("cargo build --release --locked -p iris-tokio --bin iris"));
    let stages = file.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a small runtime stage");
    assert!(file.lines().any(|l| l == "USER nonroot"));
    let run: String = file
        .lines()
        .filter(|l| l.starts_with("ENTRYPOINT") || l.starts_with("CMD"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(run.contains("\"/usr/local/bin/iris\""), "{run}");
    assert_known(&flags_in(&run), "container/Dockerfile");
}

#[test]
fn the_kubernetes_manifest_parses_and_its_parts_fit_together() {
    let (_, text) = deploy("kubernetes/iris.yaml");
    let docs = YamlLoader::load_from_str(&text).expect("the manifest is YAML");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (service, daemons) = (kind("Service"), kind("DaemonSet"));
    let namespace = daemons["metadata"]["namespace"].as_str().unwrap();
    // A headless Service that lists nodes before they are ready: the seeds.
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let app = &daemons["spec"]["template"]["metadata"]["labels"]["app"];
    assert_eq!(&service["spec"]["selector"]["app"], app);
    let pod = &daemons["spec"]["template"]["spec"];
    // One node per host, its relay port on the host's loopback.
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_known(&flags_in(&args.join(" ")), "kubernetes/iris.yaml");
    let after = |flag: &str| {
        let i = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag}"));
        args[i + 1]
    };
    let service_name = service["metadata"]["name"].as_str().unwrap();
    let port = service["spec"]["ports"][0]["port"].as_i64().unwrap();
    assert_eq!(
        after("--seed"),
        format!("{service_name}.{namespace}.svc.cluster.local:{port}")
    );
    assert!(after("--peer-bind").ends_with(&format!(":{port}")));
    // Every $(VAR) in the arguments is set in the container's environment.
    let env: Vec<&str> = c["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for a in &args {
        if let Some(var) = a.split("$(").nth(1).and_then(|r| r.split(')').next()) {
            assert!(env.contains(&var), "{var} is not in the environment");
        }
    }
    // The probes ask the metrics endpoint the node is told to serve: readiness on /ready.
    let metrics_port: i64 = after("--metrics")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/ready")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"].as_i64(),
        Some(metrics_port)
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["port"].as_i64(),
        Some(metrics_port)
    );
    // The key: a Secret mounted read-only where --rsa points.
    let key = after("--rsa");
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(key.starts_with(mount) && c["volumeMounts"][0]["readOnly"].as_bool() == Some(true));
    assert!(pod["volumes"][0]["secret"]["secretName"].as_str().is_some());
}
