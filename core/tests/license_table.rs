//! Table-driven license cases, one file each under `license_cases/`:
//!
//! - `NAME.lic` is the license text. Every `@sign` in it is replaced by the real
//!   signature (base64, quoted) of the line it sits on, made with the test vendor key.
//! - `NAME.tamper`, if present, holds `from<TAB>to`: applied to the signed text, to
//!   prove a signed line cannot be altered.
//! - `NAME.err` is the exact error expected from parsing and then verifying against the
//!   test vendor's public key (cases named `wrong_key*` are verified against another key).
//! - `NAME.ok` lists the canonical form of every parsed line, one per line; the file must
//!   also verify, and survive `sign_file` → parse → verify with the same canonical lines.

// Helpers of a test file are test code: a failed unwrap is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use tally_core::license::{
    canonical_line, parse, parse_all, sign_file, sign_line, verify_file, verify_file_all,
    LicenseFile, VendorKey, VendorSigningKey,
};

fn vendor_key() -> VendorSigningKey {
    VendorSigningKey::from_bytes(&[7; 32])
}

fn other_key() -> VendorSigningKey {
    VendorSigningKey::from_bytes(&[8; 32])
}

fn keys_for(name: &str) -> Vec<(String, VendorKey)> {
    let k = if name.starts_with("wrong_key") {
        other_key()
    } else {
        vendor_key()
    };
    vec![("acme".to_owned(), k.public())]
}

/// Replaces each `@sign` with the signature of the line it is on.
fn sign_placeholders(text: &str) -> String {
    // A dummy signature keeps the layout (SIGN may sit on a continued line of its own);
    // signing ignores it, since SIGN is not part of the canonical line.
    let dummy = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
    let unsigned = text.replace("@sign", &format!("\"{dummy}\""));
    let mut file = parse(&unsigned).expect("a signing case parses once unsigned");
    let key = vendor_key();
    for line in &mut file.lines {
        sign_line(line, &key);
    }
    let mut out = String::new();
    for (i, physical) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line_no = i as u32 + 1;
        let owner = file.lines.iter().rfind(|l| l.line_no <= line_no);
        match owner.and_then(|l| l.signature.as_ref()) {
            Some(sig) if physical.contains("@sign") => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
                out.push_str(&physical.replace("@sign", &format!("\"{b64}\"")));
            }
            _ => out.push_str(physical),
        }
    }
    out
}

fn load(path: &Path) -> (String, String) {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let mut text = fs::read_to_string(path).unwrap();
    if text.contains("@sign") {
        text = sign_placeholders(&text);
    }
    if let Ok(t) = fs::read_to_string(path.with_extension("tamper")) {
        let (from, to) = t
            .trim_end_matches('\n')
            .split_once('\t')
            .expect("from<TAB>to");
        assert!(
            text.contains(from),
            "{name}: tamper target {from:?} not in the text"
        );
        text = text.replacen(from, to, 1);
    }
    (name, text)
}

fn canonical(file: &LicenseFile) -> String {
    file.lines
        .iter()
        .map(canonical_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/license_cases");
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lic"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_case_gives_exactly_what_its_file_says() {
    let (mut errs, mut oks, mut failures) = (0, 0, Vec::new());
    for path in cases() {
        let (name, text) = load(&path);
        let keys = keys_for(&name);
        // Unsigned cases test the parser alone; signed ones must also verify.
        let signed = fs::read_to_string(&path).unwrap().contains("@sign");
        let result = parse(&text).and_then(|f| {
            if signed {
                verify_file(&f, &keys).map(|()| f)
            } else {
                Ok(f)
            }
        });
        if let Ok(expected) = fs::read_to_string(path.with_extension("err")) {
            errs += 1;
            let expected = expected.trim_end_matches('\n');
            match result {
                Err(e) if e.to_string() == expected => {}
                Err(e) => failures.push(format!("{name}: expected\n  {expected}\ngot\n  {e}")),
                Ok(_) => failures.push(format!(
                    "{name}: expected\n  {expected}\nbut it was accepted"
                )),
            }
        } else {
            oks += 1;
            let expected = fs::read_to_string(path.with_extension("ok"))
                .unwrap_or_else(|_| panic!("{name}: needs a .err or a .ok file"));
            let expected = expected.trim_end_matches('\n');
            match result {
                Err(e) => failures.push(format!("{name}: expected success, got {e}")),
                Ok(f) if canonical(&f) != expected => failures.push(format!(
                    "{name}: canonical lines differ:\n{}\nexpected:\n{expected}",
                    canonical(&f)
                )),
                Ok(f) => {
                    let signed = sign_file(&text, &vendor_key()).unwrap();
                    let again = parse(&signed).unwrap_or_else(|e| panic!("{name}: {e}\n{signed}"));
                    let pk = vendor_key().public();
                    verify_file(&again, &[("acme".into(), pk), ("globex".into(), pk)]).unwrap();
                    assert_eq!(
                        canonical(&again),
                        canonical(&f),
                        "{name}: sign_file round trip"
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        errs >= 40 && oks >= 8,
        "too few cases found: {errs} invalid, {oks} valid"
    );
}

#[test]
fn oversized_input_is_refused_up_front() {
    let huge = "#".repeat(tally_core::license::MAX_FILE_BYTES + 1);
    assert_eq!(
        parse(&huge).unwrap_err().to_string(),
        format!(
            "line 1, column 1: the file is {} bytes; a license file may be at most {}",
            huge.len(),
            tally_core::license::MAX_FILE_BYTES
        )
    );
    let long_line = format!(
        "VENDOR acme\nFEATURE cad acme 1 permanent 1 NOTICE={}\n",
        "x".repeat(70_000)
    );
    assert_eq!(
        parse(&long_line).unwrap_err().to_string(),
        "line 2, column 1: the directive is longer than 65536 bytes"
    );
}

#[test]
fn key_files_round_trip_and_garbage_keys_are_refused() {
    let k = vendor_key();
    let k2 = VendorSigningKey::from_text(&k.to_text()).unwrap();
    assert_eq!(k2.public(), k.public());
    assert_eq!(
        VendorKey::from_text(&k.public().to_text()).unwrap(),
        k.public()
    );
    for (text, err) in [
        (
            "ssh-ed25519 AAAA",
            "invalid key: a public key starts with \"tally-ed25519-public:\"",
        ),
        (
            "tally-ed25519-public:!!!",
            "invalid key: the public key is not valid base64",
        ),
        (
            "tally-ed25519-public:AAAA",
            "invalid key: the public key must be 32 bytes, found 3",
        ),
    ] {
        assert_eq!(VendorKey::from_text(text).unwrap_err().to_string(), err);
    }
    assert!(
        VendorSigningKey::from_text(&k.public().to_text()).is_err(),
        "a public key is no secret key"
    );
}

/// A vendor fixing a file sees every mistake at once: each bad directive, then (once it
/// parses) each line whose signature fails; a trailing `# comment` is no mistake.
#[test]
fn every_mistake_is_reported_at_once() {
    let text = "VENDOR acme\n\
        FEATURE a acme 1.0 permanent 2 # two seats, renewed yearly\n\
        FEATURE b acme x permanent 2\n\
        FEATURE c acme 1.0 permanent 2 LINGR=5\n\
        INCREMENT d acme 1.0 31-feb-2027 2\n\
        FEATURE e acme 1.0 permanent 3\n";
    let (file, errors) = parse_all(text);
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (e, line) in lines.iter().zip(["line 3,", "line 4,", "line 5,"]) {
        assert!(e.starts_with(line), "{e}");
    }
    assert_eq!(
        file.lines
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "e"]
    );
    assert_eq!(parse(text).unwrap_err().to_string(), lines[0]);

    let good = "VENDOR acme\nFEATURE a acme 1.0 permanent 2\nFEATURE b acme 1.0 permanent 2\nFEATURE c acme 1.0 permanent 2\n";
    let signed = sign_file(good, &vendor_key()).unwrap();
    // Two of the three lines altered after signing.
    let altered = signed
        .replace(
            "FEATURE a acme 1.0 permanent 2",
            "FEATURE a acme 1.0 permanent 9",
        )
        .replace(
            "FEATURE c acme 1.0 permanent 2",
            "FEATURE c acme 1.0 permanent 9",
        );
    let file = parse(&altered).unwrap();
    let bad: Vec<String> = verify_file_all(&file, &keys_for("acme"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("INCREMENT a)") && bad[1].contains("INCREMENT c)"),
        "{bad:#?}"
    );
    assert_eq!(
        verify_file(&file, &keys_for("acme"))
            .unwrap_err()
            .to_string(),
        bad[0]
    );
}
