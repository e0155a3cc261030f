//! Parser tables: every directive read right, and every mistake named at its line and
//! column with what is wrong.

use super::*;

const ALL: &str = "\
# every directive once
GROUPCASEINSENSITIVE ON
GROUP eng alice \\
      \"bob smith\"
GROUP eng carol
HOST_GROUP lab ws1 ws2
INCLUDE cad GROUP eng
INCLUDEALL HOST_GROUP lab
EXCLUDE \"cad:VERSION=2.0\" USER mallory
EXCLUDEALL INTERNET 10.9.*.*
RESERVE 2 cad:DUP_GROUP=UH GROUP eng
MAX 3 cad PROJECT apollo
LINGER cad 600
MAX_OVERDRAFT cad 1
TIMEOUT cad 3600
TIMEOUTALL 7200
MAX_BORROW_HOURS cad 48
BORROW_LOWWATER cad 2
INCLUDE_BORROW cad DISPLAY :0
EXCLUDE_BORROW cad INTERNET 2001:db8::/32
include cad host ws3
";

#[test]
fn every_directive_parses_to_what_it_says() {
    let o = parse(ALL).unwrap();
    let shown: Vec<String> = o.lines().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "line 2: GROUPCASEINSENSITIVE ON",
            "line 3: GROUP eng alice \"bob smith\"",
            "line 5: GROUP eng carol",
            "line 6: HOST_GROUP lab ws1 ws2",
            "line 7: INCLUDE cad GROUP eng",
            "line 8: INCLUDEALL HOST_GROUP lab",
            "line 9: EXCLUDE cad:VERSION=2.0 USER mallory",
            "line 10: EXCLUDEALL INTERNET 10.9.*.*",
            "line 11: RESERVE 2 cad:DUP_GROUP=UH GROUP eng",
            "line 12: MAX 3 cad PROJECT apollo",
            "line 13: LINGER cad 600",
            "line 14: MAX_OVERDRAFT cad 1",
            "line 15: TIMEOUT cad 3600",
            "line 16: TIMEOUTALL 7200",
            "line 17: MAX_BORROW_HOURS cad 48",
            "line 18: BORROW_LOWWATER cad 2",
            "line 19: INCLUDE_BORROW cad DISPLAY :0",
            "line 20: EXCLUDE_BORROW cad INTERNET 2001:db8::/32",
            "line 21: INCLUDE cad HOST ws3",
        ]
    );
    // GROUP lines of one name add up (FlexNet), folded under GROUPCASEINSENSITIVE ON.
    let eng: Vec<&str> = o
        .members(GroupKind::Group, "eng")
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(eng, ["alice", "bob smith", "carol"]);
    assert!(o.group_case_insensitive());
    // The canonical text parses back to the same value, lines included.
    assert_eq!(parse(&o.to_string()).unwrap(), o);
}

#[test]
fn mistakes_name_their_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("INCLUDE cad USER", "line 1, column 17: INCLUDE ends early: expected a name after the TYPE (usage: INCLUDE feature TYPE name)"),
        ("INCLUDE cad PERSON bob", "line 1, column 13: expected a TYPE: USER, HOST, DISPLAY, GROUP, HOST_GROUP, INTERNET or PROJECT, found \"PERSON\""),
        ("INCLUDE cad USER bob extra", "line 1, column 22: unexpected \"extra\" after the arguments of INCLUDE (usage: INCLUDE feature TYPE name)"),
        ("\n  RESERVE 0 cad USER bob", "line 2, column 11: expected a number of seats from 1 up, found \"0\""),
        ("RESERVE -1 cad USER bob", "line 1, column 9: expected a number of seats from 1 up, found \"-1\""),
        ("MAX 99999999999 cad USER bob", "line 1, column 5: expected a number of seats, found \"99999999999\""),
        ("MAX 2 c@d USER bob", "line 1, column 7: expected a feature name (up to 64 letters, digits, '_', '-' or '.'), optionally with :VERSION=v or :DUP_GROUP=g, found \"c@d\""),
        ("MAX 2 cad:VERSION=x USER bob", "line 1, column 7: expected feature:VERSION=v with a version such as 2026.1, found \"cad:VERSION=x\""),
        ("MAX 2 cad:DUP_GROUP=V USER bob", "line 1, column 7: expected feature:DUP_GROUP=g with NONE, SITE or a combination of U, H and D, found \"cad:DUP_GROUP=V\""),
        ("MAX 2 cad:HOSTID=abc USER bob", "line 1, column 7: the feature qualifier HOSTID is not supported: only VERSION= and DUP_GROUP= select license lines in Tally"),
        ("MAX 2 cad:2.0 USER bob", "line 1, column 7: expected a qualifier after ':' of the form VERSION=v or DUP_GROUP=g, found \"cad:2.0\""),
        ("INCLUDE cad INTERNET 10.1.*", "line 1, column 22: expected an IPv4 wildcard of four parts, each a number from 0 to 255 or '*' (such as 10.1.*.*); for IPv6 use a CIDR range, found \"10.1.*\""),
        ("INCLUDE cad INTERNET 10.1.2.0/16", "line 1, column 22: expected a CIDR range whose address has no bits set past the prefix (such as 10.1.0.0/16), found \"10.1.2.0/16\""),
        ("GROUP eng", "line 1, column 10: GROUP ends early: expected at least one member (usage: GROUP name user...)"),
        ("GROUP e/g bob", "line 1, column 7: expected a group name (up to 64 letters, digits, '_', '-' or '.'), found \"e/g\""),
        ("GROUPCASEINSENSITIVE YES", "line 1, column 22: expected ON or OFF, found \"YES\""),
        ("TIMEOUT cad 60", "line 1, column 13: TIMEOUT of 60 s is below the minimum of 900 s: a shorter idle time would take seats from people who are only reading"),
        ("TIMEOUTALL 899", "line 1, column 12: TIMEOUTALL of 899 s is below the minimum of 900 s: a shorter idle time would take seats from people who are only reading"),
        ("LINGER cad 10m", "line 1, column 12: expected a number of seconds, found \"10m\""),
        ("LINGER cad 10\nLINGER cad 20", "line 2, column 1: LINGER for cad is given twice (first on line 1): remove one so the file says one thing"),
        ("TIMEOUTALL 900\n\ntimeoutall 1000", "line 3, column 1: TIMEOUTALL is given twice (first on line 1): remove one so the file says one thing"),
        ("RESERVE 1 cad GROUP eng", "line 1, column 21: GROUP \"eng\" is used but never defined: add a `GROUP eng ...` line"),
        ("HOST_GROUP eng ws1\nMAX 1 cad GROUP eng", "line 2, column 17: GROUP \"eng\" is used but never defined: add a `GROUP eng ...` line (HOST_GROUP eng exists: did you mean TYPE HOST_GROUP?)"),
        ("NOLOG IN", "line 1, column 1: NOLOG is not supported: Tally has no debug log to filter: its servers log through tracing, and the usage history keeps every checkout and denial"),
        ("  REPORTLOG +/var/log/r.log", "line 1, column 3: REPORTLOG is not supported: Tally keeps the usage history in the cluster itself (tallyctl report); there is no report log file to name"),
        ("MAX_CONNECTIONS 10", "line 1, column 1: MAX_CONNECTIONS is not supported: Tally has no per-daemon connection limit; cap use with MAX per user or group instead"),
        ("FQDN_MATCHING exact", "line 1, column 1: FQDN_MATCHING is not supported: Tally compares host names as the clients report them and resolves nothing"),
        ("RESERVATION 1 cad USER bob", "line 1, column 1: unknown directive \"RESERVATION\" (expected one of INCLUDE, INCLUDEALL, EXCLUDE, EXCLUDEALL, RESERVE, MAX, GROUP, HOST_GROUP, GROUPCASEINSENSITIVE, LINGER, MAX_OVERDRAFT, TIMEOUT, TIMEOUTALL, MAX_BORROW_HOURS, BORROW_LOWWATER, INCLUDE_BORROW, EXCLUDE_BORROW)"),
        ("\"INCLUDE\" cad USER bob", "line 1, column 1: unknown directive \"INCLUDE\" (expected one of INCLUDE, INCLUDEALL, EXCLUDE, EXCLUDEALL, RESERVE, MAX, GROUP, HOST_GROUP, GROUPCASEINSENSITIVE, LINGER, MAX_OVERDRAFT, TIMEOUT, TIMEOUTALL, MAX_BORROW_HOURS, BORROW_LOWWATER, INCLUDE_BORROW, EXCLUDE_BORROW)"),
        ("INCLUDE cad USER \"bob", "line 1, column 18: unterminated quoted string: expected a closing '\"' on the same line"),
        ("INCLUDE cad USER \"b\\ob\"", "line 1, column 20: unknown escape '\\o' in a quoted string (only \\\" and \\\\ are allowed)"),
        ("INCLUDE cad USER b\u{7}b", "line 1, column 19: unexpected control character U+0007"),
        ("INCLUDE cad \\\n\nUSER bob", "line 1, column 14: the line ends with '\\' (continued) but the next line is empty"),
        ("INCLUDE cad USER bob \\", "line 1, column 23: the line ends with '\\' (continued) but the file ends there"),
        ("INCLUDE cad USER \"\"", "line 1, column 18: expected a name of 1 to 256 characters, found \"\""),
    ];
    for (text, expected) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(&e.to_string(), expected, "{text:?}");
        assert!(expected.starts_with(&format!("line {}, column {}:", e.line(), e.column())));
    }
}

#[test]
fn parse_all_reports_every_mistake_in_file_order() {
    let text = "MAX 2 cad GROUP nope\nNOLOG IN\nINCLUDE cad USER bob\nLINGER cad x\n";
    let (o, errors) = parse_all(text);
    let at: Vec<(u32, u32)> = errors.iter().map(|e| (e.line(), e.column())).collect();
    assert_eq!(at, [(1, 17), (2, 1), (4, 12)]);
    assert_eq!(o.lines().len(), 2, "the good lines are kept");
    assert_eq!(parse(text).unwrap_err(), errors[0]);
}

#[test]
fn serde_round_trips_and_rebuilds_the_groups() {
    let o = parse(ALL).unwrap();
    let bytes = postcard::to_allocvec(&o).unwrap();
    let back: Options = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, o);
    assert!(back.members(GroupKind::HostGroup, "lab").is_some());
    // Deterministic: the same value always encodes to the same bytes.
    assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
}

#[test]
fn errors_wrap_into_the_crate_error() {
    let e: crate::Error = parse("NOLOG").unwrap_err().into();
    assert!(
        e.to_string()
            .starts_with("options file: line 1, column 1: NOLOG is not supported"),
        "{e}"
    );
}
