//! Property tests of the options file: the parser is total (no input makes it panic),
//! the canonical text parses back to the same value, and the policy never lets others
//! eat into reserved seats.

use proptest::prelude::*;
use tally_core::options::{
    parse, parse_all, Decision, FeatureKey, Holding, Request, UseTable, Who,
};

const USERS: [&str; 4] = ["ann", "bob", "Cy", "d\\\"q"];

/// A valid directive (groups `eng` and `lab` are always defined by the prelude).
fn directive() -> impl Strategy<Value = String> {
    let feature = prop_oneof![
        Just("cad".to_owned()),
        Just("sim".to_owned()),
        (1u32..5, 0u32..10).prop_map(|(a, b)| format!("\"cad:VERSION={a}.{b}\"")),
        prop_oneof![Just("U"), Just("UH"), Just("NONE"), Just("site")]
            .prop_map(|g| format!("cad:dup_group={g}")),
    ];
    let name = prop::sample::select(&USERS[..]).prop_map(|u| format!("\"{u}\""));
    let target = prop_oneof![
        name.clone().prop_map(|n| format!("USER {n}")),
        Just("HOST ws1".to_owned()),
        Just("DISPLAY :0".to_owned()),
        Just("GROUP eng".to_owned()),
        Just("host_group lab".to_owned()),
        Just("INTERNET 10.1.*.*".to_owned()),
        Just("INTERNET 2001:db8::/32".to_owned()),
        Just("PROJECT \"moon shot\"".to_owned()),
    ];
    let list = prop_oneof![
        Just("INCLUDE"),
        Just("EXCLUDE"),
        Just("INCLUDE_BORROW"),
        Just("EXCLUDE_BORROW")
    ];
    prop_oneof![
        (list, feature.clone(), target.clone()).prop_map(|(k, f, t)| format!("{k} {f} {t}")),
        (
            prop_oneof![Just("INCLUDEALL"), Just("excludeall")],
            target.clone()
        )
            .prop_map(|(k, t)| format!("{k} {t}")),
        (
            prop_oneof![Just("RESERVE"), Just("MAX")],
            1u32..9,
            feature,
            target
        )
            .prop_map(|(k, n, f, t)| format!("{k} {n} {f} \\\n   {t}")),
        prop::collection::vec(name, 1..4).prop_map(|m| format!("GROUP eng {}", m.join(" "))),
        Just("HOST_GROUP lab ws2 # a comment".to_owned()),
    ]
}

fn options_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(directive(), 0..12),
        prop::option::of(prop_oneof![Just("ON"), Just("off")]),
        prop::option::of(900u32..100_000),
    )
        .prop_map(|(lines, case, all)| {
            let mut text = String::from("GROUP eng ann\nHOST_GROUP lab ws1\n\n# site policy\n");
            text += &lines.join("\n");
            if let Some(c) = case {
                text += &format!("\nGROUPCASEINSENSITIVE {c}");
            }
            if let Some(a) = all {
                text += &format!("\nTIMEOUTALL {a}\r");
            }
            text + "\nLINGER cad 60\nMAX_OVERDRAFT cad 1\nTIMEOUT cad 900\nMAX_BORROW_HOURS cad 12\nBORROW_LOWWATER cad 1\n"
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = parse_all(&text);
    }

    #[test]
    fn the_parser_never_panics_on_options_shaped_noise(
        text in "(INCLUDE|EXCLUDEALL|RESERVE|MAX|GROUP|HOST_GROUP|TIMEOUT|USER|INTERNET|GROUP|cad|:VERSION=|:DUP_GROUP=|eng|10\\.1\\.\\*\\.\\*|/|[0-9]{1,12}|#|\\\\|\"| |\n|\r|\t){0,80}"
    ) {
        let (_, errors) = parse_all(&text);
        // Every error points inside the text.
        let lines = u32::try_from(text.split('\n').count()).unwrap_or(u32::MAX);
        for e in errors {
            prop_assert!(e.line() >= 1 && e.line() <= lines.max(1), "{e} in {text:?}");
            prop_assert!(e.column() >= 1, "{e}");
        }
    }

    #[test]
    fn printing_then_parsing_gives_the_same_value(text in options_file()) {
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let printed = parsed.to_string();
        let again = parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
        prop_assert_eq!(&again, &parsed);
        prop_assert_eq!(again.to_string(), printed);
    }

    /// Whoever asks, the seats others reserved and do not use stay free: after a grant
    /// the policy allows, the free seats still cover the reservations the asker is not in.
    #[test]
    fn others_never_take_reserved_seats(
        reserves in prop::collection::vec((1u32..4, 0usize..4), 1..4),
        held in prop::collection::vec((0usize..4, 1u32..3), 0..6),
        capacity in 1u32..16,
        asker in 0usize..4,
        seats in 1u32..4,
    ) {
        let users = ["ann", "bob", "cy", "dan"];
        let text: Vec<String> =
            reserves.iter().map(|(n, u)| format!("RESERVE {n} cad USER {}", users[*u])).collect();
        let o = parse(&text.join("\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let holders: Vec<Holding<'_>> = held
            .iter()
            .map(|(u, n)| Holding { who: Who { user: users[*u], ..Who::default() }, seats: *n })
            .collect();
        let pool = UseTable { capacity, borrowed: 0, holders: &holders };
        let req = Request {
            feature: FeatureKey::named("cad"),
            who: Who { user: users[asker], ..Who::default() },
            seats,
            borrow: false,
        };
        let in_use: u32 = held.iter().map(|h| h.1).sum();
        let free = capacity.saturating_sub(in_use);
        // Reserved and unused, for users other than the asker (user targets do not
        // overlap, so this count is exact).
        let mut kept = 0u32;
        for u in (0..users.len()).filter(|u| *u != asker) {
            let reserved: u32 = reserves.iter().filter(|r| r.1 == u).map(|r| r.0).sum();
            let using: u32 = held.iter().filter(|h| h.0 == u).map(|h| h.1).sum();
            kept += reserved.saturating_sub(using);
        }
        let allowed = o.evaluate(&req, &pool) == Decision::Allow;
        if seats <= free {
            // Allowed exactly when the grant leaves the others' reservations free.
            prop_assert_eq!(allowed, free - seats >= kept, "free {}, asked {}, kept for others {}", free, seats, kept);
        } else {
            prop_assert!(allowed, "a full pool is the ledger's refusal");
        }
    }
}
