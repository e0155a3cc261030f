//! `deploy/container` and `deploy/compose` on this machine's real Docker engine: the
//! image is built from the test build's `tallyd` and `tallyctl` (no registry is needed or
//! used), the Compose project comes up under a name of its own on free ports, and the
//! host's `tallyctl` works against the published ports while the test
//!
//! - `docker kill`s the leader's container: the held seats stay, and a new checkout is
//!   granted within a few seconds (the figure is printed);
//! - `docker network disconnect`s a follower: the other two keep granting, the cut-off
//!   node grants nothing and its `/readyz` (and so Docker's health status) turns
//!   not-ready; reconnected, it catches up (printed);
//! - `docker-compose restart`s all three nodes: the held seats stay (the outage rule: a
//!   live client that heartbeats within its TTL after the cluster returns keeps them);
//! - recreates the nodes one at a time on the same image (a rolling restart, as an
//!   upgrade does), waiting for each to be ready before the next;
//! - `down -v`, and checks that no container, network or volume of the project is left.
//!
//! A guard removes the project's containers, networks and volumes, and the test's image
//! tag, however the test ends. Where no Docker engine answers, the test says SKIPPED (on
//! the real stderr, past cargo's capture) and passes; with an engine but without Compose
//! it fails in CI (`CI` set: `.ci/run` installs docker-compose) and skips elsewhere.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{bin, bin_dir, free_ports, Target};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Says something on the process's real stderr: cargo's test harness captures
/// `eprintln!` of a passing test, and a skip or a measured figure must be seen.
fn say(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

/// Runs `cmd` to its end or for at most `limit` (then kills it and panics, naming it):
/// a Docker call that hangs must fail the test, not hold it forever.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let ereader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: ereader.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// `docker ARGS`, which must succeed.
fn docker(args: &[&str]) -> String {
    let mut c = Command::new("docker");
    c.args(args);
    let out = run(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Why Docker cannot be used here, if it cannot.
fn no_engine() -> Option<String> {
    let mut c = Command::new("docker");
    c.args(["info", "--format", "{{.ServerVersion}}"]);
    match Command::new("docker").arg("--version").output() {
        Err(e) => return Some(format!("there is no docker command ({e})")),
        Ok(o) if !o.status.success() => return Some("`docker --version` fails".into()),
        Ok(_) => {}
    }
    let out = run(c, Duration::from_secs(30));
    if out.status.success() {
        None
    } else {
        Some(format!(
            "no Docker engine answers (`docker info`: {})",
            text(&out.stderr)
        ))
    }
}

/// The Compose command: Debian's docker-compose (1.29), else the `docker compose` plugin.
fn compose_command() -> Option<Vec<String>> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        None
    }
}

/// One Compose project of this test: its name, environment and the commands on it. When
/// dropped it takes down everything the project made, and the test's image tag.
struct Project {
    name: String,
    compose: Vec<String>,
    env: Vec<(String, String)>,
    image: String,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..]);
        c.arg("-p").arg(&self.name);
        c.arg("-f")
            .arg(root().join("deploy/compose/docker-compose.yml"));
        // Nothing of the caller's Compose settings leaks in; ours are given whole.
        for v in ["COMPOSE_PROJECT_NAME", "COMPOSE_FILE"] {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.args(args);
        c
    }

    /// `compose ARGS`, which must succeed.
    fn compose(&self, args: &[&str]) -> String {
        let out = run(self.command(args), Duration::from_secs(180));
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The container id of a service.
    fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no container for {service}");
        id.lines().next().unwrap().to_owned()
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.name)
    }

    /// The project's containers, networks and volumes that still exist.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter"]),
            ("network", vec!["network", "ls", "-q", "--filter"]),
            ("volume", vec!["volume", "ls", "-q", "--filter"]),
        ] {
            let mut c = Command::new("docker");
            c.args(&args).arg(self.label());
            let out = run(c, Duration::from_secs(60));
            left.extend(
                text(&out.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("{kind} {l}")),
            );
        }
        left
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Compose's own teardown first; then, by the project's label, whatever it could
        // not remove (a half-made project, a container it no longer knows).
        let _ = run(
            self.command(&["down", "-v", "--remove-orphans", "-t", "2"]),
            Duration::from_secs(120),
        );
        let label = self.label();
        let lbl = label.as_str();
        for (list, rm) in [
            (
                vec!["ps", "-a", "-q", "--filter", lbl],
                vec!["rm", "-f", "-v"],
            ),
            (
                vec!["network", "ls", "-q", "--filter", lbl],
                vec!["network", "rm"],
            ),
            (
                vec!["volume", "ls", "-q", "--filter", lbl],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            let mut c = Command::new("docker");
            c.args(&list);
            let ids = text(&run(c, Duration::from_secs(60)).stdout);
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let mut c = Command::new("docker");
                c.args(&rm).arg(id);
                let _ = run(c, Duration::from_secs(60));
            }
        }
        let mut c = Command::new("docker");
        c.args(["rmi", "-f", &self.image]);
        let _ = run(c, Duration::from_secs(60));
    }
}

/// `tallyctl` pointed at the project by the tally.env `deploy/compose/admin.sh` wrote.
struct Env(PathBuf);

impl Target for &Env {
    fn apply(&self, cmd: &mut Command) {
        cmd.env("TALLY_CONFIG", &self.0);
    }
}

/// A `tallyctl` command against the project, with nothing of the caller's own settings.
fn tallyctl_cmd(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(bin("tallyctl"));
    for v in [
        "TALLY_ENDPOINTS",
        "TALLY_CA",
        "TALLY_CERT",
        "TALLY_KEY",
        "TALLY_CONFIG",
        "TALLY_HOST",
        "TALLY_USER",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", "/nonexistent");
    (&env).apply(&mut c);
    c.args(args);
    c
}

fn tallyctl(env: &Env, args: &[&str]) -> Output {
    run(tallyctl_cmd(env, args), Duration::from_secs(60))
}

fn json(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json", "--timeout", "5"];
    all.extend_from_slice(args);
    let out = tallyctl(env, &all);
    assert!(
        out.status.success(),
        "tallyctl {args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tallyctl --json status` whatever its verdict (it exits non-zero when degraded).
fn status(env: &Env) -> Value {
    let out = tallyctl(env, &["--json", "--timeout", "3", "status"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Polls `f` every 100 ms until it gives something, for at most `limit`; panics naming
/// `what` and the last thing seen.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(t) => return t,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The status once every node answers, knows one leader and has applied the same index.
fn converged(env: &Env) -> Result<Value, String> {
    let st = status(env);
    let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
    let applied: Vec<_> = nodes.iter().map(|n| n["applied_index"].clone()).collect();
    let ok = st["verdict"] == "healthy"
        && nodes.len() == 3
        && nodes.iter().all(|n| n["healthy"] == true)
        && applied.windows(2).all(|w| w[0] == w[1]);
    if ok {
        Ok(st)
    } else {
        Err(st.to_string())
    }
}

/// Docker's health status of a container (starting, healthy, unhealthy).
fn health(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Health.Status}}", id])
}

/// `tallyd healthcheck` inside the container: (exit code, what it printed).
fn readyz_inside(id: &str) -> (Option<i32>, String) {
    let mut c = Command::new("docker");
    c.args(["exec", id, "tallyd", "healthcheck"]);
    let out = run(c, Duration::from_secs(30));
    (out.status.code(), text(&out.stdout))
}

/// The active leases, as (lease id, user).
fn active_leases(env: &Env) -> Vec<(u64, String)> {
    let mut v: Vec<_> = json(env, &["leases"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .map(|l| {
            (
                l["id"].as_u64().unwrap_or(0),
                l["user"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A checkout that checks in at once, as the probe user (DUP_GROUP=U: however often it
/// runs it counts one seat): how long `tallyctl` took to be granted, or why not.
fn probe_checkout(env: &Env, timeout_s: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let out = tallyctl(
        env,
        &[
            "--timeout",
            timeout_s,
            "checkout",
            "solid_modeler",
            "--hold",
            "0",
            "--user",
            "probe",
            "--host",
            "probe-host",
        ],
    );
    if out.status.success() {
        Ok(t.elapsed())
    } else {
        Err(text(&out.stderr))
    }
}

/// Seat holders (`tallyctl checkout --hold`), killed by their ids when dropped.
struct Holders(Vec<Child>);

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn compose_cluster_on_the_real_docker_engine() {
    if let Some(why) = no_engine() {
        say(&format!(
            "\n*** SKIPPED: {why}, so the container image and deploy/compose were NOT \
             tested. .ci/run runs this test wherever a Docker engine answers. ***\n"
        ));
        return;
    }
    let Some(compose) = compose_command() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "a Docker engine answers but there is no docker-compose: .ci/run installs Debian's docker-compose for this test"
        );
        say(
            "\n*** SKIPPED: a Docker engine answers but neither docker-compose nor `docker \
             compose` is installed (Debian: apt-get install docker-compose), so \
             deploy/compose was NOT tested. .ci/run installs it. ***\n",
        );
        return;
    };
    let started = Instant::now();
    // Unique per run, so tests and CI jobs side by side never share a project, network,
    // volume or image tag. Compose project names: lower case, digits, '-' and '_'.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let unique = format!("tallytest{}x{nanos:08x}", std::process::id());
    let image = format!("tally:{unique}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Six host ports: three gRPC and three HTTP, free a moment ago, all different.
    let grpc = free_ports(3);
    let http = loop {
        let h = free_ports(3);
        if h.abs_diff(grpc) >= 3 {
            break h;
        }
    };
    // The site's config: the shipped one, with the test vendor's key trusted.
    let config = d.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let keys = d.join("keys");
    let out = run(
        {
            let mut c = Command::new(bin("tallyctl"));
            c.args(["license", "keygen", "--out"]).arg(&keys);
            c
        },
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    std::fs::copy(keys.join("vendor.pub"), config.join("demo.pub")).unwrap();
    let mut toml =
        std::fs::read_to_string(root().join("deploy/compose/config/tally.toml")).unwrap();
    toml.push_str("\n[vendors]\ndemo = \"demo.pub\"\n");
    std::fs::write(config.join("tally.toml"), toml).unwrap();
    // The nodes run as uid 10001: the mounted directory (a 0700 temporary one here) and
    // its files must be readable by it.
    use std::os::unix::fs::PermissionsExt as _;
    for p in [d, config.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["tally.toml", "demo.pub"] {
        std::fs::set_permissions(config.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut env: Vec<(String, String)> = vec![
        ("TALLY_IMAGE".into(), image.clone()),
        ("TALLY_ADVERTISE_HOST".into(), "127.0.0.1".into()),
        ("TALLY_GRPC_BIND".into(), "127.0.0.1".into()),
        ("TALLY_HTTP_BIND".into(), "127.0.0.1".into()),
        ("TALLY_CONFIG_DIR".into(), config.display().to_string()),
        ("TALLY_SITE".into(), "compose test".into()),
    ];
    for n in 0..3u16 {
        env.push((format!("TALLY_GRPC_PORT{}", n + 1), (grpc + n).to_string()));
        env.push((format!("TALLY_HTTP_PORT{}", n + 1), (http + n).to_string()));
    }
    // From here on the guard removes whatever the project and the build made.
    let project = Project {
        name: unique.clone(),
        compose,
        env,
        image: image.clone(),
    };

    // The image, from this test's binaries (the documented command, with a tag of ours).
    let t = Instant::now();
    let mut build = Command::new(root().join("deploy/container/build.sh"));
    build.arg(&image).env("TALLY_BIN_DIR", bin_dir());
    let out = run(build, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "deploy/container/build.sh failed: {}",
        text(&out.stderr)
    );
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &image])
        .parse()
        .unwrap();
    say(&format!(
        "compose test: image {image} built in {} ms, {} MiB",
        ms(t.elapsed()),
        size / 1024 / 1024
    ));
    // Not root, and the HEALTHCHECK is the image's own.
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &image]),
        "10001:10001"
    );

    // Up, and every node healthy by Docker's own health check (the node's /readyz).
    let t = Instant::now();
    project.compose(&["up", "-d"]);
    let ids: Vec<String> = (1..=3)
        .map(|n| project.container(&format!("node{n}")))
        .collect();
    wait_for("three healthy containers", Duration::from_secs(90), || {
        let h: Vec<String> = ids.iter().map(|id| health(id)).collect();
        if h.iter().all(|s| s == "healthy") {
            Ok(())
        } else {
            Err(format!("{h:?}"))
        }
    });
    say(&format!(
        "compose test: up and healthy in {} ms",
        ms(t.elapsed())
    ));
    for id in &ids {
        assert_eq!(
            docker(&["inspect", "-f", "{{.Config.User}}", id]),
            "10001:10001"
        );
    }

    // The administrator's identity from the `ca` volume, as the README says.
    let admin = d.join("admin");
    let mut c = Command::new(root().join("deploy/compose/admin.sh"));
    c.arg(&admin).args(["-p", &unique]);
    c.envs(project.env.iter().map(|(k, v)| (k, v)));
    let out = run(c, Duration::from_secs(60));
    assert!(out.status.success(), "admin.sh: {}", text(&out.stderr));
    let env = Env(admin.join("tally.env"));
    assert!(std::fs::read_to_string(&env.0)
        .unwrap()
        .contains(&format!("127.0.0.1:{grpc},127.0.0.1:{}", grpc + 1)));
    // The CA's key stays in the CA's volume: no node has it.
    for id in &ids {
        let mut c = Command::new("docker");
        c.args(["exec", id, "tallyctl", "pki", "issue", "/etc/tally/tls"]);
        c.args(["--role", "admin", "--name", "intruder"]);
        let out = run(c, Duration::from_secs(30));
        assert!(!out.status.success(), "a node could issue certificates");
    }

    // A license, signed with the test vendor's key, and three seat holders.
    let unsigned = d.join("demo.txt");
    let out = Command::new(bin("tallyd"))
        .arg("demo-license")
        .output()
        .unwrap();
    std::fs::write(&unsigned, &out.stdout).unwrap();
    let lic = d.join("demo.lic");
    let out = tallyctl(
        &env,
        &[
            "license",
            "sign",
            unsigned.to_str().unwrap(),
            "--key",
            keys.join("vendor.key").to_str().unwrap(),
            "--out",
            lic.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "sign: {}", text(&out.stderr));
    let out = tallyctl(&env, &["license", "load", lic.to_str().unwrap()]);
    assert!(out.status.success(), "load: {}", text(&out.stderr));
    let st = wait_for("a converged cluster", Duration::from_secs(30), || {
        converged(&env)
    });
    let mut holders = Holders(Vec::new());
    for n in 1..=3 {
        let user = format!("holder{n}");
        let host = format!("ws{n}");
        let mut c = tallyctl_cmd(
            &env,
            &[
                "checkout",
                "solid_modeler",
                "--hold",
                "900",
                "--user",
                &user,
                "--host",
                &host,
            ],
        );
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join(format!("{user}.log"))).unwrap(),
            ));
        holders.0.push(c.spawn().unwrap());
    }
    let held = wait_for("three held seats", Duration::from_secs(30), || {
        let l = active_leases(&env);
        if l.len() == 3 {
            Ok(l)
        } else {
            Err(format!("{l:?}"))
        }
    });
    let holders_alive = |holders: &mut Holders| {
        for (i, c) in holders.0.iter_mut().enumerate() {
            let exited = c.try_wait().unwrap();
            assert!(
                exited.is_none(),
                "holder{} exited ({exited:?}): {}",
                i + 1,
                std::fs::read_to_string(d.join(format!("holder{}.log", i + 1))).unwrap_or_default()
            );
        }
    };

    // 1. docker kill the leader's container.
    let leader = st["leader_id"].as_u64().unwrap();
    let leader_id = &ids[usize::try_from(leader).unwrap() - 1];
    let t = Instant::now();
    docker(&["kill", leader_id]);
    let killed = t.elapsed();
    let granted = probe_checkout(&env, "15")
        .unwrap_or_else(|e| panic!("no checkout after the leader's container was killed: {e}"));
    let gap = t.elapsed();
    say(&format!(
        "compose test: FAILOVER GAP {} ms from `docker kill` of node {leader}'s container to a granted checkout \
         ({} ms of it the kill itself, {} ms the checkout by a fresh tallyctl)",
        ms(gap),
        ms(killed),
        ms(granted)
    ));
    assert!(
        gap < Duration::from_secs(5),
        "failover took {gap:?}: the design promises about a second"
    );
    assert_eq!(active_leases(&env), held, "seats lost in the failover");
    holders_alive(&mut holders);
    // Back, and caught up.
    let t = Instant::now();
    docker(&["start", leader_id]);
    wait_for(
        "the killed node back and caught up",
        Duration::from_secs(60),
        || converged(&env),
    );
    say(&format!(
        "compose test: killed node {leader} restarted and caught up in {} ms",
        ms(t.elapsed())
    ));

    // 2. docker network disconnect a follower.
    let st = status(&env);
    let killed = leader;
    let leader = st["leader_id"].as_u64().unwrap();
    // A follower, and not the node just restarted if there is a choice: Docker does not
    // count failed checks within a container's start period (20 s), which would hide
    // how soon a node in steady state turns unhealthy.
    let cut = (1..=3u64)
        .find(|n| *n != leader && *n != killed)
        .or_else(|| (1..=3u64).find(|n| *n != leader))
        .unwrap();
    let cut_id = &ids[usize::try_from(cut).unwrap() - 1];
    let network = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        cut_id,
    ]);
    assert_eq!(network, format!("{unique}_cluster"));
    let t = Instant::now();
    docker(&["network", "disconnect", &network, cut_id]);
    // Not ready, by its own /readyz (the host cannot reach a container cut off from
    // its only network, published ports included, so the test looks from inside).
    let why = wait_for(
        "the cut-off node not ready",
        Duration::from_secs(15),
        || match readyz_inside(cut_id) {
            (Some(1), said) if said.starts_with("503") => Ok(said),
            other => Err(format!("{other:?}")),
        },
    );
    say(&format!(
        "compose test: node {cut} cut off; its /readyz said not ready after {} ms: {why}",
        ms(t.elapsed())
    ));
    // The majority keeps granting, and keeps the held seats.
    let granted = probe_checkout(&env, "15")
        .unwrap_or_else(|e| panic!("the majority refused a checkout: {e}"));
    say(&format!(
        "compose test: the majority granted a checkout in {} ms while node {cut} was cut off",
        ms(granted)
    ));
    assert_eq!(active_leases(&env), held, "seats lost in the partition");
    // The cut-off node grants nothing: a checkout from inside it gives up.
    let mut c = Command::new("docker");
    c.args(["exec", cut_id, "tallyctl", "--endpoints", "127.0.0.1:27000"]);
    c.args(["--timeout", "3", "checkout", "solid_modeler", "--hold", "0"]);
    c.args(["--user", "cutoff", "--host", "cutoff"]);
    let out = run(c, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "the cut-off node granted a checkout: {}",
        text(&out.stdout)
    );
    // And Docker marks it unhealthy (two failed checks two seconds apart).
    wait_for(
        "Docker's health status unhealthy",
        Duration::from_secs(30),
        || match health(cut_id).as_str() {
            "unhealthy" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
    say(&format!(
        "compose test: node {cut} unhealthy to Docker {} ms after the cut",
        ms(t.elapsed())
    ));
    // Reconnect under its service name: a plain `network connect` would give it none,
    // and its peers dial it by that name.
    let t = Instant::now();
    docker(&[
        "network",
        "connect",
        "--alias",
        &format!("node{cut}"),
        &network,
        cut_id,
    ]);
    // Checkouts go on while it rejoins: the slowest one is what a user would notice of
    // it (the rejoining node, having campaigned alone, comes back with a higher term).
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    let after = wait_for(
        "the cut-off node caught up",
        Duration::from_secs(60),
        || {
            let took = probe_checkout(&env, "15")
                .unwrap_or_else(|e| panic!("a checkout failed while node {cut} rejoined: {e}"));
            slowest = slowest.max(took);
            probes += 1;
            converged(&env)
        },
    );
    say(&format!(
        "compose test: node {cut} reconnected and caught up in {} ms (term {} -> {}); \
         {probes} checkouts meanwhile, the slowest {} ms",
        ms(t.elapsed()),
        st["term"],
        after["term"],
        ms(slowest)
    ));
    assert_eq!(readyz_inside(cut_id).0, Some(0));
    assert_eq!(active_leases(&env), held);
    holders_alive(&mut holders);

    // 3. docker-compose restart of all three nodes: held seats kept.
    let started_before: Vec<String> = ids
        .iter()
        .map(|id| docker(&["inspect", "-f", "{{.State.StartedAt}}", id]))
        .collect();
    let t = Instant::now();
    project.compose(&["restart", "-t", "10", "node1", "node2", "node3"]);
    let restarted = t.elapsed();
    let granted = wait_for(
        "a checkout after the restart",
        Duration::from_secs(60),
        || probe_checkout(&env, "5"),
    );
    say(&format!(
        "compose test: `restart` of all nodes took {} ms; first checkout granted {} ms after it began ({} ms for that checkout)",
        ms(restarted),
        ms(t.elapsed()),
        ms(granted)
    ));
    for (id, before) in ids.iter().zip(&started_before) {
        assert_ne!(
            &docker(&["inspect", "-f", "{{.State.StartedAt}}", id]),
            before,
            "container {id} was not restarted"
        );
    }
    wait_for(
        "converged after the restart",
        Duration::from_secs(60),
        || converged(&env),
    );
    assert_eq!(active_leases(&env), held, "seats lost in the restart");
    holders_alive(&mut holders);

    // 4. A rolling restart onto the same image: one node recreated at a time, each ready
    // and caught up before the next, the way an upgrade goes.
    let t = Instant::now();
    for n in 1..=3 {
        let svc = format!("node{n}");
        project.compose(&["up", "-d", "--no-deps", "--force-recreate", &svc]);
        let id = project.container(&svc);
        wait_for(
            &format!("{svc} recreated and healthy"),
            Duration::from_secs(60),
            || match health(&id).as_str() {
                "healthy" => Ok(()),
                other => Err(other.to_owned()),
            },
        );
        wait_for(
            &format!("converged after {svc}"),
            Duration::from_secs(60),
            || converged(&env),
        );
    }
    probe_checkout(&env, "15").unwrap();
    say(&format!(
        "compose test: rolling recreate of the three nodes in {} ms",
        ms(t.elapsed())
    ));
    assert_eq!(
        active_leases(&env),
        held,
        "seats lost in the rolling restart"
    );
    holders_alive(&mut holders);
    drop(holders);

    // No container of the project has an anonymous volume (the image declares /data a
    // volume): those carry no project label and would outlive `down`.
    let lbl = project.label();
    for id in docker(&["ps", "-a", "-q", "--filter", &lbl]).lines() {
        let mounts = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}",
            id,
        ]);
        for m in mounts.split_whitespace() {
            if let Some(name) = m.strip_prefix("volume:") {
                assert!(
                    name.starts_with(&format!("{unique}_")),
                    "container {id} has a volume that is not the project's: {m}"
                );
            }
        }
    }

    // 5. down -v leaves nothing of the project.
    project.compose(&["down", "-v", "-t", "5"]);
    let left = project.leftovers();
    assert!(left.is_empty(), "left after down -v: {left:?}");
    say(&format!(
        "compose test: passed in {} s",
        started.elapsed().as_secs()
    ));
}

/// What the Compose project's one-shot `certs` service runs on every `up`, without
/// Docker: `tallyctl pki ensure` makes the CA and the certificates once, keeps them on
/// later runs, keeps the CA's key out of the nodes' directory, and refuses (naming the
/// host) a kept certificate that lacks a host now asked for.
#[test]
fn pki_ensure_makes_what_is_missing_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = (dir.path().join("ca"), dir.path().join("tls"));
    let ensure = |extra: &[&str]| {
        let mut c = Command::new(bin("tallyctl"));
        c.args(["pki", "ensure"]).arg(&ca).arg("--out").arg(&tls);
        c.args(["--peer", "node1=node1,127.0.0.1", "--peer", "node2=node2"]);
        c.args(extra);
        run(c, Duration::from_secs(30))
    };
    let first = ensure(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("site CA made"));
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let crt1 = read(tls.join("node1.crt"));
    assert_eq!(read(tls.join("ca.crt")), read(ca.join("ca.crt")));
    assert!(
        !tls.join("ca.key").exists(),
        "the CA key went to the nodes' directory"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(tls.join("node1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let again = ensure(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let said = text(&again.stdout);
    assert!(said.contains("site CA kept"), "{said}");
    assert!(said.contains("peer certificate for node1 kept"), "{said}");
    assert_eq!(
        read(tls.join("node1.crt")),
        crt1,
        "a kept certificate changed"
    );

    // A name the kept certificate does not carry: refused, naming it.
    let mut c = Command::new(bin("tallyctl"));
    c.args(["pki", "ensure"]).arg(&ca).arg("--out").arg(&tls);
    c.args(["--peer", "node2=node2,tally.example.com"]);
    let out = run(c, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tally.example.com"),
        "{}",
        text(&out.stderr)
    );
}

/// `tallyd healthcheck`, the image's HEALTHCHECK, says unhealthy (exit 1, on stdout,
/// which Docker keeps) when nothing answers, and refuses an https:// URL without a CA.
#[test]
fn healthcheck_fails_with_a_reason() {
    let port = free_ports(1);
    let mut c = Command::new(bin("tallyd"));
    c.args(["healthcheck", &format!("http://127.0.0.1:{port}/readyz")]);
    c.env_remove("TALLY_CA");
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("unhealthy: connecting to 127.0.0.1:"));
    let mut c = Command::new(bin("tallyd"));
    c.args(["healthcheck", &format!("https://127.0.0.1:{port}/readyz")]);
    c.env_remove("TALLY_CA");
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("give the site CA"),
        "{}",
        text(&out.stdout)
    );
}
