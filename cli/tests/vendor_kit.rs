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
