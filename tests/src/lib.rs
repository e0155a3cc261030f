//! Harness for Tally's end-to-end tests: the real `tallyd` and `tallyctl` binaries, free
//! ports, and processes that are cleaned up by their ids however a test ends.
//! [`proxy`] injects faults on a link; [`nemesis`] runs fault schedules, [`checker`]
//! judges their histories with the independent seat [`model`].

pub mod admin_work;
pub mod archive;
pub mod checker;
pub mod collect;
pub mod harness;
pub mod model;
pub mod nemesis;
pub mod proxy;
pub mod workload;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The directory holding `tallyd` and `tallyctl` of this test's profile.
///
/// `cargo test --workspace` builds both (each has integration tests in its own package,
/// which makes cargo build the binary) with the same features as everything else, so
/// they are used as they are. Only when one is missing or older than a source file (say,
/// after `cargo test -p tally-tests` alone) is `cargo build` run: building them here
/// unconditionally resolves features differently and rebuilds half the workspace.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // An explicit directory (a long soak pinned to one build) is used as is.
        if let Some(d) = std::env::var_os("TALLY_BIN_DIR") {
            return PathBuf::from(d);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> (tests) or target/<profile>/<bin> (the soak).
        let mut dir = exe
            .parent()
            .expect("the executable is in a directory")
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let newest_source = ["core", "proto", "server", "client", "cli"]
            .iter()
            .filter_map(|c| newest(&root.join(c)))
            .max();
        let stale = ["tallyd", "tallyctl"].iter().any(|b| {
            let built = std::fs::metadata(dir.join(b))
                .and_then(|m| m.modified())
                .ok();
            built.is_none() || built < newest_source
        });
        if stale {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            // From the workspace root: in a member's directory cargo only sees its bins.
            cmd.current_dir(&root);
            cmd.args(["build", "--bin", "tallyd", "--bin", "tallyctl"]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("running cargo build");
            assert!(st.success(), "cargo build of tallyd and tallyctl failed");
        }
        dir
    })
}

/// The latest modification time of any file under `dir` (sources and manifests).
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        latest = latest.max(t);
    }
    latest
}

/// The path of one built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// `count` consecutive loopback ports that were free a moment ago (tests run in
/// parallel, so they are picked at random and checked, not fixed).
pub fn free_ports(count: u16) -> u16 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    loop {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = 20_000 + (seed >> 8) as u16 % 30_000;
        let held: Vec<_> = (0..count)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
}

/// What `tallyctl` is pointed at: plain endpoints (a plaintext cluster, or none for
/// offline commands), or a [`ThreeNodes`] cluster with its TLS admin credentials.
pub trait Target {
    fn apply(&self, cmd: &mut Command);
}

impl Target for &str {
    fn apply(&self, cmd: &mut Command) {
        cmd.arg("--endpoints").arg(self);
    }
}

impl Target for &ThreeNodes {
    fn apply(&self, cmd: &mut Command) {
        // The tally.env three-nodes.sh wrote: endpoints, CA, the admin's certificate.
        cmd.env("TALLY_CONFIG", self.dir.join("tally.env"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
    }
}

/// A `tallyctl` command pointed at `target`, with nothing from the caller's environment
/// or home directory leaking into the test.
fn tallyctl_command(target: impl Target) -> Command {
    let mut cmd = Command::new(bin("tallyctl"));
    for v in [
        "TALLY_ENDPOINTS",
        "TALLY_CA",
        "TALLY_CERT",
        "TALLY_KEY",
        "TALLY_CONFIG",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HOME", "/nonexistent");
    target.apply(&mut cmd);
    cmd
}

/// Runs `tallyctl` with `args` against `target`.
pub fn tallyctl(target: impl Target, args: &[&str]) -> Output {
    tallyctl_command(target)
        .args(args)
        .output()
        .expect("running tallyctl")
}

/// `tallyctl --json ARGS`, parsed; panics with tallyctl's stderr if it failed.
pub fn tallyctl_json(target: impl Target, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = tallyctl(target, &all);
    assert!(
        out.status.success(),
        "tallyctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tallyctl printed JSON")
}

/// `tallyctl --json status`: its exit code (0 healthy, 7 degraded, 3 no leader) and the
/// JSON it prints whatever the verdict.
pub fn tallyctl_status(target: impl Target) -> (Option<i32>, serde_json::Value) {
    let out = tallyctl(target, &["--json", "status"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tallyctl status printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Kills, by id, every process whose id a pid file lists when dropped, so a failing test
/// leaves nothing running.
#[derive(Debug)]
pub struct KillPidFiles(pub Vec<PathBuf>);

impl Drop for KillPidFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(f) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

/// Whether a process id is running. A zombie is not: a process whose parent exited is
/// adopted by PID 1, which in a container may never reap it.
pub fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// One feature of `tallyctl --json features`, by name; panics naming it if it is missing.
pub fn feature(target: impl Target, name: &str) -> serde_json::Value {
    tallyctl_json(target, &["features"])
        .as_array()
        .unwrap_or_else(|| panic!("features: not a list"))
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no feature {name}"))
}

/// The users of the live sessions, as `tallyctl --json sessions` lists them.
pub fn session_users(target: impl Target) -> Vec<String> {
    let sessions = tallyctl_json(target, &["sessions"]);
    sessions
        .as_array()
        .unwrap_or_else(|| panic!("sessions: not a list: {sessions}"))
        .iter()
        .map(|s| s["user"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Runs `deploy/local/three-nodes.sh` with the test build's binaries.
pub fn three_nodes_script(args: &[&str]) -> Output {
    three_nodes_script_env(args, &[])
}

/// [`three_nodes_script`] with extra environment for the script and the nodes it starts
/// (libfaketime's, for a cluster whose clocks all read another time).
pub fn three_nodes_script_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/local/three-nodes.sh"
    ))
    .args(args)
    .env("TALLY_BIN_DIR", bin_dir())
    .envs(env.iter().map(|(k, v)| (k, v)))
    .output()
    .expect("running three-nodes.sh")
}

/// Where Debian's `faketime` package puts libfaketime.
pub const FAKETIME_SO: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime's preload library from Debian's `faketime` package, which `.ci/run`
/// installs. Panics naming the package when it is missing: a clock test must not pass
/// by not running.
pub fn libfaketime() -> PathBuf {
    let p = PathBuf::from(FAKETIME_SO);
    assert!(
        p.exists(),
        "{} is missing: install Debian's faketime package (apt-get install -y faketime)",
        p.display()
    );
    p
}

/// The environment that makes a process's wall clock read `offset_s` seconds ahead (or
/// behind, if negative) of the real one, leaving its monotonic clock alone.
pub fn faketime_env(offset_s: i64) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), libfaketime().display().to_string()),
        ("FAKETIME".into(), format!("{offset_s:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// Three real `tallyd` processes started by `three-nodes.sh`; killed by pid when dropped.
#[derive(Debug)]
pub struct ThreeNodes {
    pub dir: PathBuf,
    /// What the script printed last: the comma-separated endpoints.
    pub endpoints: String,
    /// Extra environment of the nodes, given to every command run against them too.
    pub env: Vec<(String, String)>,
    /// What `start` printed on stderr (keys made, the license loaded, the dashboards).
    pub said: String,
    _guard: KillPidFiles,
}

impl ThreeNodes {
    /// Starts the cluster in `dir` on free ports; panics with the script's stderr if it fails.
    pub fn start(dir: &Path) -> ThreeNodes {
        ThreeNodes::start_with_env(dir, Vec::new())
    }

    /// [`ThreeNodes::start`] with extra environment for every node (see
    /// [`three_nodes_script_env`]).
    pub fn start_with_env(dir: &Path, env: Vec<(String, String)>) -> ThreeNodes {
        let mut env = env;
        if !env.iter().any(|(k, _)| k == "TALLY_HTTP_BASE") {
            // The script's default (BASE_PORT + 80) is fixed; tests run side by side.
            env.push(("TALLY_HTTP_BASE".into(), "free".into()));
        }
        ThreeNodes::start_at(dir, free_ports(3), env)
    }

    /// [`ThreeNodes::start_with_env`] on the given base port, with the script's own
    /// default for the HTTP ports unless `env` sets `TALLY_HTTP_BASE`.
    pub fn start_at(dir: &Path, base: u16, env: Vec<(String, String)>) -> ThreeNodes {
        let guard = KillPidFiles((1..=3).map(|n| dir.join(format!("node{n}.pid"))).collect());
        let dir_s = dir.to_str().expect("utf-8 temp dir");
        let out = three_nodes_script_env(&["start", dir_s, &base.to_string()], &env);
        assert!(
            out.status.success(),
            "three-nodes.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoints = stdout.lines().last().unwrap_or_default().to_owned();
        ThreeNodes {
            dir: dir.to_owned(),
            endpoints,
            env,
            said: String::from_utf8_lossy(&out.stderr).into_owned(),
            _guard: guard,
        }
    }

    /// The process id of node `n`, from its pid file.
    pub fn pid(&self, n: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{n}.pid")))
            .expect("pid file")
            .trim()
            .to_owned()
    }

    /// `three-nodes.sh CMD DIR [ARG]`.
    pub fn script(&self, cmd: &str, arg: Option<&str>) -> Output {
        let mut args = vec![cmd, self.dir.to_str().expect("utf-8 temp dir")];
        args.extend(arg);
        three_nodes_script_env(&args, &self.env)
    }
}

/// A `tallyctl checkout --hold` running in the background; killed by pid when dropped.
#[derive(Debug)]
pub struct Holder(pub Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Holder {
    /// Whether the holding `tallyctl` still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGTERM: `tallyctl` checks in and closes its session, then exits; panics unless it
    /// exits cleanly.
    pub fn release(mut self) {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let exit = self.0.wait();
        assert!(exit.as_ref().is_ok_and(|s| s.success()), "{exit:?}");
    }
}

/// Holds `feature` as `user` on `host` for `secs` seconds in a background `tallyctl
/// --json checkout`, against `target`; returns the holder and the grant it printed.
pub fn hold(
    target: impl Target,
    feature: &str,
    (user, host): (&str, &str),
    secs: u32,
) -> (Holder, serde_json::Value) {
    let mut child = tallyctl_command(target)
        .args([
            "--json", "checkout", feature, "--user", user, "--host", host,
        ])
        .args(["--hold", &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running tallyctl");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let holder = Holder(child);
    let grant = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{feature} for {user}@{host} printed {line:?}: {e}"));
    (holder, grant)
}
