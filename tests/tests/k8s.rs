//! `deploy/k8s/`: every manifest the kustomization lists validates strictly (unknown
//! fields are errors) against the Kubernetes schemas of 1.28 and 1.37, offline, with
//! PyPI's kubernetes-validate; the kustomization lists exactly those files; the
//! ServiceMonitor and the plain scrape config, whose schemas kubernetes-validate does
//! not have (a CRD; not a manifest), are checked as YAML with the fields they need; and
//! what the StatefulSet hands `tallyd` works: its flags exist, the ConfigMap's
//! tally.toml passes tallyd's own config validation, and the init list parses; and, as
//! root, the pods' arguments run for real (`deploy/k8s/rehearse.sh`).
//!
//! The validator comes from a virtualenv (deploy/k8s/requirements.txt): `TALLY_K8S_PYTHON`,
//! which `.ci/run` makes, or made here under target/. No way to PyPI fails the test,
//! naming the command: never skipped.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tally_tests::bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s() -> PathBuf {
    root().join("deploy/k8s")
}

/// The virtualenv's python, with kubernetes-validate and PyYAML: made once per test
/// process, since this file's tests run side by side and two pip runs in one virtualenv
/// trip over each other.
fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(make_python).clone()
}

fn make_python() -> PathBuf {
    if let Some(p) = std::env::var_os("TALLY_K8S_PYTHON") {
        return PathBuf::from(p);
    }
    let script = root().join("tests/hostile/make-venv.sh");
    let venv = root().join("target/k8s-venv");
    let reqs = k8s().join("requirements.txt");
    let out = Command::new(&script)
        .arg(&venv)
        .arg(&reqs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{} {} {}` failed (python3 -m venv, then pip install from PyPI): {}",
        script.display(),
        venv.display(),
        reqs.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Every YAML document of `files` (in deploy/k8s), as JSON, through PyYAML.
fn load(py: &Path, files: &[&str]) -> Vec<Value> {
    const DUMP: &str = "import json, sys, yaml\n\
        docs = []\n\
        for f in sys.argv[1:]:\n\
        \x20   with open(f) as fh:\n\
        \x20       docs += [d for d in yaml.safe_load_all(fh) if d is not None]\n\
        print(json.dumps(docs))\n";
    let out = Command::new(py)
        .arg("-c")
        .arg(DUMP)
        .args(files.iter().map(|f| k8s().join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "YAML of {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The manifests kustomization.yaml lists.
fn resources(py: &Path) -> Vec<String> {
    let k = &load(py, &["kustomization.yaml"])[0];
    assert_eq!(k["kind"], "Kustomization");
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_manifests_validate_strictly_offline() {
    let py = python();
    let listed = resources(&py);
    // The kustomization lists every manifest beside it but the two that are not plain
    // Kubernetes (see the module's comment), and nothing that is missing.
    let mut present: Vec<String> = std::fs::read_dir(k8s())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .filter(|n| {
            ![
                "kustomization.yaml",
                "servicemonitor.yaml",
                "prometheus-scrape-config.yaml",
            ]
            .contains(&n.as_str())
        })
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, present, "kustomization.yaml's resources");

    let validator = py.with_file_name("kubernetes-validate");
    let version = Command::new(&validator).arg("--version").output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&version.stdout).trim());
    let docs = load(&py, &listed.iter().map(String::as_str).collect::<Vec<_>>());
    for k in ["1.28.0", "1.37.0"] {
        let out = Command::new(&validator)
            .args(["--strict", "-k", k])
            .args(listed.iter().map(|f| k8s().join(f)))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{said}");
        // A kind without a schema is only a warning to kubernetes-validate: here it fails.
        assert!(
            out.status.success() && !said.contains("WARN") && !said.contains("ERROR"),
            "kubernetes-validate --strict -k {k} ({}):\n{said}",
            out.status
        );
        for d in &docs {
            let what = format!(
                "passed for resource {}/{}",
                d["kind"].as_str().unwrap().to_lowercase(),
                d["metadata"]["name"].as_str().unwrap()
            );
            assert!(said.contains(&what), "{k}: no \"{what}\" in:\n{said}");
        }
    }
}

#[test]
fn the_prometheus_files_are_yaml_with_what_they_need() {
    let py = python();
    // Honestly less than a schema check: kubernetes-validate has no ServiceMonitor (a
    // CRD of the Prometheus Operator), and a scrape config is Prometheus's format.
    let sm = &load(&py, &["servicemonitor.yaml"])[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "http");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["scheme"], "https");
    // It selects the headless Service (every pod, ready or not), by labels it has.
    let services = load(&py, &["services.yaml"]);
    let peers = services
        .iter()
        .find(|s| s["metadata"]["name"] == "tally-peers")
        .unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&peers["metadata"]["labels"][k], v, "label {k}");
    }
    assert!(peers["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "http"));
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);

    let sc = &load(&py, &["prometheus-scrape-config.yaml"])[0];
    let job = &sc["scrape_configs"][0];
    assert_eq!(job["scheme"], "https");
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
    assert!(job["tls_config"]["ca_file"].is_string());
}

/// The one container of the StatefulSet.
fn container(py: &Path) -> Value {
    let ss = &load(py, &["statefulset.yaml"])[0];
    assert_eq!(ss["spec"]["serviceName"], "tally-peers");
    assert_eq!(ss["spec"]["podManagementPolicy"], "Parallel");
    ss["spec"]["template"]["spec"]["containers"][0].clone()
}

/// `$(NAME)` replaced as the kubelet would for pod `pod`.
fn expand(arg: &str, pod: &str, init: &str) -> String {
    arg.replace("$(POD_NAME)", pod)
        .replace("$(POD_NAMESPACE)", "tally")
        .replace("$(TALLY_INIT)", init)
}

#[test]
fn what_the_statefulset_gives_tallyd_is_what_tallyd_takes() {
    let py = python();
    let c = container(&py);
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(c["command"][0], "tallyd");
    assert_eq!(args[0], "run");

    // Every flag exists (a typo would crash-loop every pod).
    let help = Command::new(bin("tallyd"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(
            flag.starts_with("--") && help.contains(flag),
            "tallyd run has no {flag}"
        );
    }

    // The ConfigMap's tally.toml, with what the flags add, is a valid node config.
    let cm = &load(&py, &["configmap.yaml"])[0];
    let toml = cm["data"]["tally.toml"].as_str().unwrap();
    let init = cm["data"]["init"].as_str().unwrap();
    let base = Path::new("/etc/tally/config");
    let mut cfg = tally_server::config::FileConfig::parse(toml)
        .unwrap()
        .into_config(base)
        .unwrap();
    let flag = |name: &str, pod: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .map(|v| expand(v, pod, init))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for (n, pod) in ["tally-0", "tally-1", "tally-2"].iter().enumerate() {
        cfg.id = tally_server::config::id_from_ordinal(&flag("--id-from-ordinal", pod)).unwrap();
        assert_eq!(cfg.id, n as u64 + 1);
        cfg.advertise = flag("--advertise", pod);
        cfg.tls = Some(tally_server::config::TlsFiles {
            cert: flag("--tls-cert", pod).into(),
            key: flag("--tls-key", pod).into(),
            ca: flag("--tls-ca", pod).into(),
        });
        cfg.validate().unwrap();
        assert_eq!(cfg.data_dir, Path::new("/var/lib/tally"));
        // The init list names this pod at the address it advertises.
        let me = format!("{}={}", cfg.id, cfg.advertise);
        assert!(
            flag("--init", pod).split(',').any(|m| m == me),
            "{me} is not in the init list {init}"
        );
    }

    // The volumes go where the config and flags look.
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (name, path) in [
        ("data", "/var/lib/tally"),
        ("config", "/etc/tally/config"),
        ("tls", "/etc/tally/tls"),
    ] {
        assert!(
            mounts.contains(&(name.to_owned(), path.to_owned())),
            "{name} at {path}: {mounts:?}"
        );
    }
}

/// `deploy/k8s/rehearse.sh`: the pods' arguments, run as five real `tallyd` processes
/// under the pods' DNS names (a private mount and network namespace), form a cluster,
/// scale to five and survive a volume replacement as README.md tells. It needs root
/// (unshare, mount): without, it says SKIPPED on stderr, and fails in CI (`CI` set),
/// which runs as root.
#[test]
fn the_pods_arguments_form_grow_and_repair_a_cluster() {
    let can = Command::new("unshare")
        .args(["--mount", "--net", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !can {
        assert!(
            std::env::var_os("CI").is_none(),
            "unshare --mount --net fails in CI: the rehearsal needs root"
        );
        eprintln!(
            "\n*** SKIPPED: `unshare --mount --net` is not allowed here (not root?), so \
             deploy/k8s/rehearse.sh did NOT run. CI runs it. ***\n"
        );
        return;
    }
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    // `timeout` bounds it; on its SIGTERM the script kills its nodes by their ids.
    let out = Command::new("timeout")
        .arg("300")
        .arg(k8s().join("rehearse.sh"))
        .arg(tally_tests::bin_dir())
        .arg(&py)
        .arg(tmp.path().join("rehearsal"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{said}");
    assert!(
        out.status.success() && said.contains("rehearse: ok"),
        "deploy/k8s/rehearse.sh ({}):\n{said}",
        out.status
    );
}
