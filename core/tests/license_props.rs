//! Property tests of the license format: the parser is total (no input makes it panic),
//! signing round-trips, and no single-character change to a signed file can produce a
//! line that verifies but means something else.

use proptest::prelude::*;
use tally_core::license::{
    canonical_line, parse, parse_all, sign_file, verify_file, Date, VendorKey, VendorSigningKey,
};

fn key() -> VendorSigningKey {
    VendorSigningKey::from_bytes(&[42; 32])
}

fn keys() -> Vec<(String, VendorKey)> {
    vec![("acme".into(), key().public())]
}

/// A valid, unsigned FEATURE or INCREMENT line.
fn feature_line() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("FEATURE"), Just("INCREMENT")],
        "[a-z][a-z0-9_]{0,12}",
        prop::collection::vec(0u32..3000, 1..3),
        prop_oneof![
            Just(None),
            (2026i32..2040, 1u32..13, 1u32..29).prop_map(Some)
        ],
        prop_oneof![Just(None), (1u32..500).prop_map(Some)],
        prop::option::of(0u32..10_000),
        prop::option::of(prop_oneof![Just("NONE"), Just("U"), Just("UH")]),
        prop::option::of(0u32..10),
        prop::option::of("[ -~]{0,30}"),
    )
        .prop_map(
            |(kind, name, version, expiry, count, linger, dup, overdraft, notice)| {
                let version: Vec<String> = version.iter().map(u32::to_string).collect();
                let expiry = expiry.map_or("permanent".to_owned(), |(y, m, d)| {
                    Date::from_ymd(y, m, d).expect("valid day").to_string()
                });
                let count = count.map_or("uncounted".to_owned(), |n| n.to_string());
                let mut s = format!("{kind} {name} acme {} {expiry} {count}", version.join("."));
                if let Some(l) = linger {
                    s += &format!(" LINGER={l}");
                }
                if let Some(d) = dup {
                    s += &format!(" DUP_GROUP={d}");
                }
                if let Some(o) = overdraft {
                    s += &format!(" OVERDRAFT={o}");
                }
                if let Some(n) = notice {
                    s += &format!(
                        " NOTICE=\"{}\"",
                        n.replace('\\', "\\\\").replace('"', "\\\"")
                    );
                }
                s
            },
        )
}

fn license_file() -> impl Strategy<Value = String> {
    prop::collection::vec(feature_line(), 1..5)
        .prop_map(|lines| format!("VENDOR acme\n{}\n", lines.join("\n")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn the_parser_never_panics_on_license_shaped_noise(
        text in "(VENDOR|FEATURE|INCREMENT|#|\\\\|\"|=| |\n|\r|acme|cad|[0-9]{1,12}|-|\\.|jan|permanent|uncounted|SIGN|LINGER|DUP_GROUP){0,80}"
    ) {
        let _ = parse(&text);
    }

    /// Reporting every mistake changes no verdict: parse_all finds none exactly when
    /// parse succeeds, its first is parse's, and they are in file order.
    #[test]
    fn parse_all_agrees_with_parse(
        text in "(VENDOR acme\n|FEATURE cad acme 1\\.0 permanent 2\n|FEATURE|INCREMENT|#| |\n|acme|cad|[0-9]{1,3}|jan|permanent|LINGER=|x){0,60}"
    ) {
        let (_, all) = parse_all(&text);
        match parse(&text) {
            Ok(_) => prop_assert!(all.is_empty(), "{:?}", all),
            Err(e) => prop_assert_eq!(all.first().map(ToString::to_string), Some(e.to_string())),
        }
        let lines: Vec<u32> = all.iter().filter_map(|e| match e {
            tally_core::Error::Parse { line, .. } => Some(*line),
            _ => None,
        }).collect();
        prop_assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{:?}", lines);
    }

    #[test]
    fn signed_files_parse_back_and_verify(text in license_file()) {
        let original = parse(&text).expect("generated lines are valid");
        let signed = sign_file(&text, &key()).expect("signs");
        let again = parse(&signed).expect("signed output parses");
        prop_assert!(verify_file(&again, &keys()).is_ok());
        let a: Vec<String> = original.lines.iter().map(canonical_line).collect();
        let b: Vec<String> = again.lines.iter().map(canonical_line).collect();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn no_single_character_change_verifies_with_another_meaning(
        text in license_file(),
        at in any::<prop::sample::Index>(),
        replacement in prop_oneof![Just('1'), Just('9'), Just('x'), Just('.'), Just(' '), Just('"'), Just('\\'), Just('\n')],
    ) {
        let signed = sign_file(&text, &key()).expect("signs");
        let meaning: Vec<String> =
            parse(&signed).expect("parses").lines.iter().map(canonical_line).collect();
        let chars: Vec<char> = signed.chars().collect();
        let i = at.index(chars.len());
        let mut mutated: String = chars[..i].iter().collect();
        mutated.push(replacement);
        mutated.extend(&chars[i + 1..]);
        if let Ok(f) = parse(&mutated) {
            if verify_file(&f, &keys()).is_ok() {
                let after: Vec<String> = f.lines.iter().map(canonical_line).collect();
                prop_assert_eq!(after, meaning, "a change verified with another meaning");
            }
        }
    }
}
