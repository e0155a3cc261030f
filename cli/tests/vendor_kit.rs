//! The vendor's kit works offline: keygen, sign, verify, and refusals with exit codes.
//! (Being an integration test of this package also makes `cargo test` build `tallyctl`
//! for the end-to-end tests in `tests/`.)
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::process::{Command, Output};

fn tallyctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tallyctl"))
        .args(args)
        .env_remove("TALLY_ENDPOINTS")
        .output()
        .unwrap()
}

#[test]
fn keygen_sign_verify_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let out = tallyctl(&["license", "keygen", "--out", &p("kit")]);
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(p("kit/vendor.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the secret key is private to its owner");
    // A second keygen would orphan every license signed so far: refused.
    let again = tallyctl(&["license", "keygen", "--out", &p("kit")]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to replace"));

    std::fs::write(
        p("a.txt"),
        "VENDOR acme\nFEATURE cad acme 1.0 permanent 4\n",
    )
    .unwrap();
    let sign = tallyctl(&[
        "license",
        "sign",
        &p("a.txt"),
        "--key",
        &p("kit/vendor.key"),
    ]);
    assert!(sign.status.success());
    std::fs::write(p("a.lic"), &sign.stdout).unwrap();
    let ok = tallyctl(&[
        "license",
        "verify",
        &p("a.lic"),
        "--pubkey",
        &p("kit/vendor.pub"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("every signature valid (vendor acme)"));

    // Another vendor's key does not verify; a garbled file names its line and column.
    tallyctl(&["license", "keygen", "--out", &p("other")]);
    let wrong = tallyctl(&[
        "license",
        "verify",
        &p("a.lic"),
        "--pubkey",
        &p("other/vendor.pub"),
    ]);
    assert_eq!(wrong.status.code(), Some(5));
    std::fs::write(
        p("bad.lic"),
        "VENDOR acme\nFEATURE cad acme 1.0 someday 4\n",
    )
    .unwrap();
    let bad = tallyctl(&[
        "license",
        "verify",
        &p("bad.lic"),
        "--pubkey",
        &p("kit/vendor.pub"),
    ]);
    assert_eq!(bad.status.code(), Some(5));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("bad.lic: line 2, column"), "{err}");
    // A public key where the secret one belongs.
    let swapped = tallyctl(&[
        "license",
        "sign",
        &p("a.txt"),
        "--key",
        &p("kit/vendor.pub"),
    ]);
    assert_eq!(swapped.status.code(), Some(5));
    // No endpoints for a cluster command: usage error, saying how to give them.
    let none = tallyctl(&["status"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("TALLY_ENDPOINTS"));
}

/// `verify` reports every bad line at once (on stderr, or in `--json`), a trailing
/// `# comment` is no mistake, `sign` refuses a file past the size limit without reading
/// it all (`/dev/zero` never ends), and `--count 0` is a usage error.
#[test]
fn verify_reports_every_mistake_and_sign_reads_no_further_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    assert!(tallyctl(&["license", "keygen", "--out", &p("kit")])
        .status
        .success());
    std::fs::write(
        p("c.txt"),
        "VENDOR acme\nFEATURE cad acme 1.0 permanent 4 # renewed each March\n\
         FEATURE cam acme 1.0 permanent 2\nFEATURE cae acme 1.0 permanent 1\n",
    )
    .unwrap();
    let sign = tallyctl(&[
        "license",
        "sign",
        &p("c.txt"),
        "--key",
        &p("kit/vendor.key"),
    ]);
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    // Two lines altered after signing, and one that no longer parses.
    let signed = String::from_utf8(sign.stdout).unwrap();
    let bad = signed
        .replace(
            "FEATURE cad acme 1.0 permanent 4",
            "FEATURE cad acme 1.0 permanent 40",
        )
        .replace(
            "FEATURE cam acme 1.0 permanent 2",
            "FEATURE cam acme 1.0 permanent 20",
        )
        .replace(
            "FEATURE cae acme 1.0 permanent 1",
            "FEATURE cae acme 1.0 someday 1",
        );
    std::fs::write(p("c.lic"), bad).unwrap();
    let verify = |json: bool| {
        let mut args = vec!["license", "verify"];
        if json {
            args.insert(0, "--json");
        }
        let (f, k) = (p("c.lic"), p("kit/vendor.pub"));
        tallyctl(&[&args[..], &[f.as_str(), "--pubkey", k.as_str()]].concat())
    };
    let text = verify(false);
    assert_eq!(text.status.code(), Some(5));
    let err = String::from_utf8_lossy(&text.stderr);
    assert_eq!(err.lines().count(), 3, "{err}");
    for what in ["someday", "INCREMENT cad)", "INCREMENT cam)"] {
        assert!(err.contains(what), "{what} missing: {err}");
    }
    let json = verify(true);
    assert_eq!(json.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["errors"][0]["line"].is_u64(), "{v}");

    let zero = tallyctl(&[
        "license",
        "sign",
        "/dev/zero",
        "--key",
        &p("kit/vendor.key"),
    ]);
    assert_eq!(zero.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("longer than 4194304 bytes"),
        "{}",
        String::from_utf8_lossy(&zero.stderr)
    );
    let count0 = tallyctl(&[
        "checkout",
        "cad",
        "--count",
        "0",
        "--endpoints",
        "127.0.0.1:9",
    ]);
    assert_eq!(count0.status.code(), Some(2));
}
