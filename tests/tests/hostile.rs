//! The hostile-client suite (`tests/hostile/*.py`) against three real `tallyd` processes
//! over TLS, while honest `tally-client` sessions check seats out and in: every attack must
//! be refused the way it says, and the honest clients must see no failure at all.
//!
//! The attacker is written in Python with grpcio (stubs generated from proto/ at run
//! time), so it shares no code with Tally's gRPC stack. Its interpreter comes from
//! `TALLY_PYTHON` (a virtualenv `.ci/run` makes with `tests/hostile/make-venv.sh`), or
//! this test makes the same virtualenv under target/; it fails, naming the command, when
//! that cannot be done (no PyPI, say): never skipped.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::{CheckoutOptions, Client, ClientOptions, ConnectOptions, Tls};
use tally_tests::{free_ports, tallyctl, ThreeNodes};

/// Small enough that the suite can reach them (defaults are 1,000 and 1,000/s).
const SESSIONS_PER_IDENTITY: u32 = 32;
const PER_SESSION_RPS: u32 = 200;
/// Twice the default: the suite checks that a caller's honest write is answered while its
/// refusals are held, and a loaded CI machine must not take the whole hold for a commit.
const FAILED_AUTH_DELAY_MS: u64 = 2_000;
const HONEST: usize = 3;
/// The suite takes about a minute; far beyond that it hangs.
const SUITE_DEADLINE: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's python: `TALLY_PYTHON`, else made by make-venv.sh under target/.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TALLY_PYTHON") {
        return PathBuf::from(p);
    }
    let script = root().join("tests/hostile/make-venv.sh");
    let venv = root().join("target/hostile-venv");
    let out = Command::new(&script).arg(&venv).output().unwrap();
    assert!(
        out.status.success(),
        "`{} {}` failed (it runs python3 -m venv, then pip install of tests/hostile/requirements.txt from PyPI): {}",
        script.display(),
        venv.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A client certificate from the cluster's site CA.
fn issue(cluster: &ThreeNodes, name: &str) {
    let pki = cluster.dir.join("pki");
    let o = tallyctl(
        cluster,
        &[
            "pki",
            "issue",
            pki.to_str().unwrap(),
            "--role",
            "client",
            "--name",
            name,
            "--host",
            &format!("ws-{name}"),
        ],
    );
    ok(&o, "pki issue");
}

/// `work` for the honest clients (never all taken), `target` and `scarce` for the
/// attacker's checkouts and queues.
fn load_license(cluster: &ThreeNodes) {
    let d = &cluster.dir;
    let (txt, lic) = (d.join("hostile.txt"), d.join("hostile.lic"));
    std::fs::write(
        &txt,
        "VENDOR demo\nFEATURE work demo 1.0 permanent 16\n\
         FEATURE target demo 1.0 permanent 2\nFEATURE scarce demo 1.0 permanent 1\n",
    )
    .unwrap();
    let key = d.join("vendor.key");
    let o = tallyctl(
        cluster,
        &[
            "license",
            "sign",
            txt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            lic.to_str().unwrap(),
        ],
    );
    ok(&o, "license sign");
    ok(
        &tallyctl(cluster, &["license", "load", lic.to_str().unwrap()]),
        "license load",
    );
}

/// What the honest workload saw.
#[derive(Debug, Default)]
struct Seen {
    cycles: u64,
    failures: Vec<String>,
}

/// One honest application: one session, checking a `work` seat out and in until told to
/// stop. Every checkout must be granted (16 seats, 3 users) and nothing may fail.
async fn honest(client: Client, stop: Arc<AtomicBool>) -> (Client, Seen) {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        match client.checkout("work", CheckoutOptions::default()).await {
            Ok(seat) => match seat.checkin().await {
                Ok(_) => seen.cycles += 1,
                Err(e) => seen.failures.push(format!("checkin: {e}")),
            },
            Err(e) => seen.failures.push(format!("checkout: {e}")),
        }
        // An application's pace, well under limits.per_session_rps.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (client, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_and_honest_ones_never_notice() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("overlay.toml");
    std::fs::write(
        &overlay,
        format!(
            "[limits]\nsessions_per_identity = {SESSIONS_PER_IDENTITY}\nper_session_rps = {PER_SESSION_RPS}\nfailed_auth_delay_ms = {FAILED_AUTH_DELAY_MS}\n"
        ),
    )
    .unwrap();
    let http_base = free_ports(3);
    let cluster = ThreeNodes::start_with_env(
        dir.path(),
        vec![
            ("TALLY_NODE_CONFIG".into(), overlay.display().to_string()),
            ("TALLY_HTTP_BASE".into(), http_base.to_string()),
        ],
    );
    for name in ["mallory", "honest"] {
        issue(&cluster, name);
    }
    load_license(&cluster);

    let pki = cluster.dir.join("pki");
    let tls = Tls::from_files(
        &pki.join("ca.crt"),
        Some((&pki.join("honest.crt"), &pki.join("honest.key"))),
    )
    .unwrap();
    let eps: Vec<String> = cluster.endpoints.split(',').map(str::to_owned).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..HONEST {
        let client = Client::connect(
            &eps,
            ClientOptions {
                user: format!("honest{i}"),
                host: "ws-honest".into(),
                ttl: Duration::from_secs(10),
                connect: ConnectOptions {
                    retry_for: Duration::from_secs(10),
                    tls: Some(tls.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
        workers.push(tokio::spawn(honest(client, stop.clone())));
    }

    let http: Vec<String> = (0..3)
        .map(|n| format!("127.0.0.1:{}", http_base + n))
        .collect();
    let err_path = dir.path().join("suite.stderr");
    let mut suite = Command::new(&python)
        .arg(root().join("tests/hostile/hostile.py"))
        .args(["--endpoints", &cluster.endpoints])
        .args(["--pki", pki.to_str().unwrap()])
        .args(["--http", &http.join(",")])
        .args([
            "--sessions-per-identity",
            &SESSIONS_PER_IDENTITY.to_string(),
        ])
        .args(["--per-session-rps", &PER_SESSION_RPS.to_string()])
        .args(["--failed-auth-delay-ms", &FAILED_AUTH_DELAY_MS.to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = suite.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > SUITE_DEADLINE {
            let _ = suite.kill();
            let _ = suite.wait();
            panic!("the hostile suite ran over {SUITE_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut suite.stdout.take().unwrap(), &mut out).unwrap();
    println!("{out}");
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let last = out.lines().last().unwrap_or_default();
    assert!(
        status.success() && last.ends_with(" passed, 0 failed"),
        "the hostile suite failed ({status}):\n{out}\n{stderr}"
    );
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        passed,
        out.lines().filter(|l| l.starts_with("PASS ")).count()
    );
    assert!(passed >= 12, "fewer attacks ran than the suite has:\n{out}");

    // The honest clients worked throughout, and saw nothing go wrong.
    stop.store(true, Ordering::Relaxed);
    let mut cycles = 0;
    for w in workers {
        let (client, seen) = w.await.unwrap();
        assert!(
            seen.failures.is_empty(),
            "an honest client saw {} failures under attack, first: {:?}",
            seen.failures.len(),
            seen.failures.first()
        );
        assert!(
            seen.cycles > 0,
            "an honest client made no progress under attack"
        );
        cycles += seen.cycles;
        assert!(
            !matches!(client.state(), tally_client::SessionState::Lost { .. }),
            "an honest session was lost: {:?}",
            client.state()
        );
        client.close().await.unwrap();
    }
    println!(
        "honest: {HONEST} clients, {cycles} checkout/checkin cycles in {:.0} s, no failure",
        started.elapsed().as_secs_f64()
    );
    // No node fell over on the way (a panic on bad input would end its process).
    for n in 1..=3 {
        assert!(
            tally_tests::alive(&cluster.pid(n)),
            "node {n} died under attack; its log: {}",
            cluster.dir.join(format!("node{n}.log")).display()
        );
    }
}
