//! Whole requests with every field at its extremes, against the ledger: whatever a
//! client or a confused leader puts in an entry (sequence numbers at u64::MAX, times at
//! 0 and u64::MAX, counts and waits and TTLs at their limits, ids that name nothing),
//! applying it never panics (debug builds check every overflow), and afterwards the
//! ledger still snapshots, restores to the same bytes, and keeps its counts within the
//! license.

use proptest::prelude::*;
use tally_core::ledger::*;
use tally_core::license::{Count, Expiry, FeatureLine, LicenseFile, LineKind, Version};

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::from(u32::MAX)),
        Just(1_780_000_000_000),
        any::<u64>(),
    ]
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(1_000_001),
        any::<u32>()
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::whole(0)),
        Just(Version::parse("9999999999.9999999999").expect("the largest version parses")),
        (any::<u32>(), any::<u32>())
            .prop_map(|(w, f)| Version::parse(&format!("{w}.{f}")).expect("a decimal parses")),
    ]
}

fn line(count: u32, overdraft: u32, linger: u32) -> FeatureLine {
    FeatureLine {
        overdraft,
        linger_secs: linger,
        ..FeatureLine::new(
            LineKind::Feature,
            "cad".into(),
            "acme".into(),
            Version::whole(1),
            Expiry::Permanent,
            Count::Seats(count),
            1,
        )
    }
}

fn req() -> impl Strategy<Value = RequestId> {
    (any::<[u8; 16]>(), extreme_u64()).prop_map(|(client, seq)| RequestId { client, seq })
}

fn auth() -> impl Strategy<Value = SessionAuth> {
    (extreme_u64(), any::<bool>()).prop_map(|(session, good)| SessionAuth {
        session,
        secret: if good { [7; 32] } else { [0; 32] },
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (req(), extreme_u64()).prop_map(|(req, ttl_ms)| Op::OpenSession {
            req,
            holder: Holder {
                user: "u".into(),
                host: "h".into(),
                display: String::new(),
                pid: u32::MAX,
            },
            ttl_ms,
            secret: [7; 32],
            origin: Default::default(),
        }),
        (
            req(),
            auth(),
            version(),
            extreme_u32(),
            prop::option::of(extreme_u64())
        )
            .prop_map(|(req, auth, version, count, wait_ms)| Op::Checkout {
                req,
                auth,
                feature: "cad".into(),
                version,
                count,
                wait_ms,
            }),
        (req(), auth(), extreme_u64()).prop_map(|(req, auth, lease)| Op::Checkin {
            req,
            auth,
            lease
        }),
        (req(), auth()).prop_map(|(req, auth)| Op::CloseSession { req, auth }),
        prop::collection::vec((extreme_u64(), extreme_u64()), 0..4)
            .prop_map(|beats| Op::CheckpointHeartbeats { beats }),
        prop::collection::vec(extreme_u64(), 0..4)
            .prop_map(|sessions| Op::ExpireSessions { sessions }),
        prop::collection::vec(extreme_u64(), 0..4).prop_map(|seats| Op::ReclaimSeats { seats }),
        extreme_u64().prop_map(|lease| Op::RemoveLease { lease }),
        (extreme_u32(), extreme_u32(), extreme_u32()).prop_map(|(c, o, l)| Op::LoadLicense {
            source: "x.lic".into(),
            license: LicenseFile {
                vendors: vec!["acme".into()],
                lines: vec![line(c, o, l)],
            },
        }),
        Just(Op::ServeQueue),
        Just(Op::Tick),
        extreme_u64().prop_map(|to_ms| Op::RepairClock { to_ms }),
        (
            prop::sample::select(vec![
                "UTC",
                "Pacific/Apia",
                "Pacific/Kiritimati",
                "Etc/GMT+12",
                "bogus",
                ""
            ]),
            any::<bool>(),
        )
            .prop_map(|(zone, only_if_unset)| Op::SetTimeZone {
                zone: zone.into(),
                only_if_unset,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn extreme_requests_never_panic_and_leave_a_sound_ledger(
        steps in prop::collection::vec((extreme_u64(), op()), 1..60),
    ) {
        let mut l = Ledger::new();
        l.apply(&Entry {
            index: 1,
            at_ms: 1_780_000_000_000,
            op: Op::LoadLicense {
                source: "site.lic".into(),
                license: LicenseFile { vendors: vec!["acme".into()], lines: vec![line(3, 1, 30)] },
            },
        });
        for (i, (at_ms, op)) in steps.into_iter().enumerate() {
            l.apply(&Entry { index: i as u64 + 2, at_ms, op });
        }
        let bytes = l.snapshot();
        let back = Ledger::restore(&bytes).expect("a ledger restores from its own snapshot");
        prop_assert_eq!(back.snapshot(), bytes);
        for f in l.features() {
            prop_assert!(f.in_use <= f.issued + f.overdraft_limit, "{:?}", f);
        }
    }
}
