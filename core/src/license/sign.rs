//! The canonical form of a license line, and Ed25519 signing and verification of it.
//!
//! The signature covers a canonical text of every field but `SIGN`, so that harmless
//! reformatting (spacing, continuations, keyword order, letter case of keywords and month
//! names, `0` for `permanent`, `2.10` for `2.1`: versions are decimal numbers) never breaks
//! a signature, while any
//! change of meaning does. The canonical line is:
//!
//! ```text
//! FEATURE|INCREMENT <name> <vendor> <version> <expiry> <count> [KEY=value ...]
//! UPGRADE <name> <vendor> <from version> <version> <expiry> <count> [KEY=value ...]
//! PACKAGE <name> <vendor> [<version>] COMPONENTS="..." [OPTIONS=SUITE] [KEY=value ...]
//! ```
//!
//! with the version as its decimal number (`2.1`, and `1.0` for a whole number), the expiry
//! as `31-dec-2027` or `permanent`,
//! the count as a number or `uncounted`, then the keywords that differ from their default,
//! in this order: `START`, `ISSUED`, `LINGER`, `DUP_GROUP` (`U`/`UH`), `OVERDRAFT`,
//! `USER_BASED` (with its fair-use days), `GRACE`, `DEMO`, `NOTICE`, `VENDOR_STRING`,
//! `CLUSTER` (16 lowercase hex digits), `EDITION` (quoted), `EDITION_CAP`, a bare
//! `EDITION_CLOSED`, `SUPERSEDE` (bare, or its quoted names), `SUITE_DUP_GROUP`,
//! `METER_INTERVAL`, `METER_MIN`, `OVERUSE_DAYS` (each only when it differs from its
//! default of 600, 600 and 4, so lines signed before these keywords existed still verify);
//! a package's components are written `name:version[:count]` (the version only where
//! the line gives one);
//! strings always double-quoted, `"` and `\` escaped with `\`. The signed message is the
//! canonical line prefixed by the domain tag `tally-license-v1\n`, so a signature made
//! for anything else can never pass as a license signature.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::{
    parse, Count, DupGroup, Expiry, FeatureLine, LicenseFile, LicenseModel, LineKind, Metering,
    Package,
};
use crate::Error;

const DOMAIN: &str = "tally-license-v1\n";
const SECRET_PREFIX: &str = "tally-ed25519-secret:";
const PUBLIC_PREFIX: &str = "tally-ed25519-public:";

/// The canonical text of a line: what its signature covers. See the module docs.
pub fn canonical_line(line: &FeatureLine) -> String {
    canonical_parts(line).join(" ")
}

/// The canonical line as words: the six leading fields, then one `KEY=value` per keyword
/// (a quoted value may hold spaces, so callers must not split the joined text on them).
fn canonical_parts(line: &FeatureLine) -> Vec<String> {
    if let Some(pkg) = line
        .package
        .as_ref()
        .filter(|_| line.kind == LineKind::Package)
    {
        return package_parts(line, pkg);
    }
    let kind = line.kind.name();
    let expiry = match line.expiry {
        Expiry::Permanent => "permanent".to_owned(),
        Expiry::On(d) => d.to_string(),
    };
    let count = match line.count {
        Count::Uncounted => "uncounted".to_owned(),
        Count::Seats(n) => n.to_string(),
    };
    let mut out = vec![kind.to_owned(), line.name.clone(), line.vendor.clone()];
    if let Some(from) = &line.upgrade_from {
        out.push(from.to_string());
    }
    out.extend([line.version.to_string(), expiry, count]);
    let mut kw = |key: &str, value: String| out.push(format!("{key}={value}"));
    if let Some(d) = line.start {
        kw("START", d.to_string());
    }
    if let Some(d) = line.issued {
        kw("ISSUED", d.to_string());
    }
    if line.linger_secs != 0 {
        kw("LINGER", line.linger_secs.to_string());
    }
    if line.dup_group != DupGroup::None {
        kw("DUP_GROUP", line.dup_group.name().into());
    }
    if line.overdraft != 0 {
        kw("OVERDRAFT", line.overdraft.to_string());
    }
    if let LicenseModel::NamedUser { fair_use_days } = line.model {
        kw("USER_BASED", fair_use_days.to_string());
    }
    if line.term.grace_days != 0 {
        kw("GRACE", line.term.grace_days.to_string());
    }
    if line.term.demo_seats != 0 {
        kw("DEMO", line.term.demo_seats.to_string());
    }
    if let Some(s) = &line.notice {
        kw("NOTICE", quote(s));
    }
    if let Some(s) = &line.vendor_string {
        kw("VENDOR_STRING", quote(s));
    }
    if let Some(c) = line.cluster {
        kw("CLUSTER", c.to_string());
    }
    if let Some(e) = &line.edition {
        kw("EDITION", quote(&e.name));
        if let Some(cap) = e.cap {
            kw("EDITION_CAP", cap.to_string());
        }
        if e.closed {
            out.push("EDITION_CLOSED".to_owned());
        }
    }
    supersede_part(line, &mut out);
    if let Some(g) = line.suite_dup_group {
        out.push(format!("SUITE_DUP_GROUP={}", g.name()));
    }
    let (m, default) = (line.meter, Metering::DEFAULT);
    for (key, value, default) in [
        ("METER_INTERVAL", m.interval_secs, default.interval_secs),
        ("METER_MIN", m.min_secs, default.min_secs),
        ("OVERUSE_DAYS", m.overuse_days, default.overuse_days),
    ] {
        if value != default {
            out.push(format!("{key}={value}"));
        }
    }
    out
}

fn supersede_part(line: &FeatureLine, out: &mut Vec<String>) {
    match &line.supersede {
        None => {}
        Some(names) if names.is_empty() => out.push("SUPERSEDE".to_owned()),
        Some(names) => out.push(format!("SUPERSEDE={}", quote(&names.join(" ")))),
    }
}

fn package_parts(line: &FeatureLine, pkg: &Package) -> Vec<String> {
    let mut out = vec![
        LineKind::Package.name().to_owned(),
        line.name.clone(),
        line.vendor.clone(),
    ];
    if pkg.version_given {
        out.push(line.version.to_string());
    }
    let components: Vec<String> = pkg
        .components
        .iter()
        .map(|c| {
            let mut w = c.name.clone();
            if let Some(v) = &c.version {
                w.push_str(&format!(":{v}"));
                if let Some(n) = c.count {
                    w.push_str(&format!(":{n}"));
                }
            } else if let Some(n) = c.count {
                // The enabling line's version, with a count of its own.
                w.push_str(&format!("::{n}"));
            }
            w
        })
        .collect();
    out.push(format!("COMPONENTS={}", quote(&components.join(" "))));
    if pkg.suite {
        out.push("OPTIONS=SUITE".to_owned());
    }
    if let Some(d) = line.issued {
        out.push(format!("ISSUED={d}"));
    }
    supersede_part(line, &mut out);
    out
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn message(line: &FeatureLine) -> Vec<u8> {
    let mut m = DOMAIN.as_bytes().to_vec();
    m.extend_from_slice(canonical_line(line).as_bytes());
    m
}

fn decode_key(text: &str, prefix: &str, what: &str) -> Result<[u8; 32], Error> {
    let body = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| Error::Key(format!("a {what} key starts with \"{prefix}\"")))?;
    let bytes = STANDARD_NO_PAD
        .decode(body.trim_end_matches('='))
        .map_err(|_| Error::Key(format!("the {what} key is not valid base64")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Error::Key(format!(
            "the {what} key must be 32 bytes, found {}",
            bytes.len()
        ))
    })
}

/// A vendor's private signing key (the vendor's kit holds it; servers never do).
#[derive(Debug, Clone)]
pub struct VendorSigningKey(SigningKey);

impl VendorSigningKey {
    /// A key from 32 secret bytes; the caller supplies randomness (this crate has no RNG).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// Reads the one-line `tally-ed25519-secret:<base64>` key file format.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        decode_key(text, SECRET_PREFIX, "secret").map(|b| Self::from_bytes(&b))
    }

    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    /// The public key servers configure to trust this vendor.
    pub fn public(&self) -> VendorKey {
        VendorKey(self.0.verifying_key())
    }
}

/// A vendor's public key: what a server trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorKey(VerifyingKey);

impl VendorKey {
    /// Reads the one-line `tally-ed25519-public:<base64>` format.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        let bytes = decode_key(text, PUBLIC_PREFIX, "public")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| Error::Key("the public key is not a valid Ed25519 point".into()))
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }
}

/// Signs a line in place (sets its `signature`).
pub fn sign_line(line: &mut FeatureLine, key: &VendorSigningKey) {
    line.signature = Some(key.0.sign(&message(line)).to_bytes().to_vec());
}

/// Parses `text`, signs every line, and returns the file re-emitted in normal form: the
/// `VENDOR` lines, then each line's canonical text with its `SIGN`, long lines continued.
pub fn sign_file(text: &str, key: &VendorSigningKey) -> Result<String, Error> {
    sign_file_for(text, key, None)
}

/// [`sign_file`], with every line first locked to `cluster` (`CLUSTER=<id>`, replacing
/// any lock the text had) when one is given: the vendor's way to make a file that counts
/// on one customer cluster only.
pub fn sign_file_for(
    text: &str,
    key: &VendorSigningKey,
    cluster: Option<super::ClusterId>,
) -> Result<String, Error> {
    let mut file = parse(text)?;
    if let Some(c) = cluster {
        // A PACKAGE line licenses nothing by itself (its enabling line is locked), and
        // FlexNet's PACKAGE syntax has no place for a lock.
        for line in file
            .lines
            .iter_mut()
            .filter(|l| l.kind != LineKind::Package)
        {
            line.cluster = Some(c);
        }
    }
    let mut out = String::new();
    for v in &file.vendors {
        out.push_str(&format!("VENDOR {v}\n"));
    }
    for line in &mut file.lines {
        sign_line(line, key);
        let sig = line
            .signature
            .as_deref()
            .map(|s| STANDARD.encode(s))
            .unwrap_or_default();
        let mut width = 0;
        for (i, word) in canonical_parts(line).iter().enumerate() {
            if i > 0 && width + word.len() > 76 {
                out.push_str(" \\\n    ");
                width = 4;
            } else if i > 0 {
                out.push(' ');
                width += 1;
            }
            out.push_str(word);
            width += word.len();
        }
        out.push_str(&format!(" \\\n    SIGN=\"{sig}\"\n"));
    }
    Ok(out)
}

/// Checks one line's signature against its vendor's key.
pub fn verify_line(line: &FeatureLine, key: &VendorKey) -> Result<(), Error> {
    let fail = |reason: &str| Error::Signature {
        line: line.line_no,
        feature: line.name.clone(),
        reason: reason.to_owned(),
    };
    let sig = line
        .signature
        .as_deref()
        .ok_or_else(|| fail("no SIGN= keyword: the line is unsigned"))?;
    let sig =
        Signature::from_slice(sig).map_err(|_| fail("SIGN is not a 64-byte Ed25519 signature"))?;
    key.0.verify(&message(line), &sig).map_err(|_| {
        fail("signature does not match: the line was altered after signing, or signed by another key")
    })
}

/// Checks every line of a file against the key of its vendor; the first failure is the
/// error ([`verify_file_all`] reports every one).
pub fn verify_file(file: &LicenseFile, keys: &[(String, VendorKey)]) -> Result<(), Error> {
    match verify_file_all(file, keys).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every line of a file that fails its vendor's key, in file order.
pub fn verify_file_all(file: &LicenseFile, keys: &[(String, VendorKey)]) -> Vec<Error> {
    file.lines
        .iter()
        .filter_map(|line| {
            let key = keys.iter().find(|(v, _)| *v == line.vendor).map(|(_, k)| k);
            match key {
                None => Some(Error::Signature {
                    line: line.line_no,
                    feature: line.name.clone(),
                    reason: format!("no public key is configured for vendor \"{}\"", line.vendor),
                }),
                Some(key) => verify_line(line, key).err(),
            }
        })
        .collect()
}
