//! `tallyctl license ...`: loading and listing license files on a cluster, and the
//! vendor's kit (key generation, signing, verification), which works offline.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::license::{
    parse, parse_all, sign_file_for, verify_file_all, ClusterId, VendorKey, VendorSigningKey,
    MAX_FILE_BYTES,
};

use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Load (or replace) a signed license file on the cluster.
    Load {
        /// The signed license file.
        file: PathBuf,
        /// The name it is loaded under (default: the file's name). Loading the same name
        /// again replaces that file's seats.
        #[arg(long)]
        source: Option<String>,
    },
    /// Remove a loaded license file's seats.
    Unload {
        /// The name it was loaded under, as `tallyctl license list` shows it.
        source: String,
    },
    /// The license files loaded, line by line.
    List,
    /// Vendor: make a signing key pair (DIR/vendor.key, secret; DIR/vendor.pub, public).
    Keygen {
        /// The directory to write vendor.key and vendor.pub into.
        #[arg(long)]
        out: PathBuf,
        /// Replace keys already in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Vendor: sign every line of a license file with a secret key.
    Sign {
        /// The license file to sign (its lines, unsigned or signed before).
        file: PathBuf,
        /// The vendor's secret key file (vendor.key from `license keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Lock every line to one customer cluster: its id as `tallyctl status` shows
        /// it (16 hex digits). Written as CLUSTER=<id> and signed, the lines then count
        /// on that cluster only.
        #[arg(long, value_parser = parse_cluster_id)]
        cluster: Option<ClusterId>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check every line's signature against a vendor's public key.
    Verify {
        /// The signed license file.
        file: PathBuf,
        /// The vendor's public key file (vendor.pub), as the cluster trusts it.
        #[arg(long)]
        pubkey: PathBuf,
    },
}

fn parse_cluster_id(s: &str) -> Result<ClusterId, String> {
    ClusterId::parse(s).ok_or_else(|| {
        format!("\"{s}\" is not a cluster id: 16 hex digits, as `tallyctl status` shows it")
    })
}

/// A license or key file's text, read no further than a license file may be long
/// ([`MAX_FILE_BYTES`]): `sign /dev/zero` or a mistaken multi-gigabyte file is refused
/// after 4 MiB, not after memory runs out.
fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    // What is wrong with the file as a whole, named like a parse error (exit code 5).
    let whole = |message: String| tally_core::Error::Parse {
        line: 1,
        column: 1,
        message,
    };
    if bytes.len() > MAX_FILE_BYTES {
        return with_path(
            path,
            Err(whole(format!(
                "the file is longer than {MAX_FILE_BYTES} bytes, the most a license file may be"
            ))),
        );
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        whole(format!(
            "the file is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    });
    with_path(path, text)
}

/// A key file's contents; a key's own error is kept as the cause so the exit code says
/// "invalid file".
fn with_path<T>(path: &Path, r: Result<T, tally_core::Error>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::new(e).context(path.display().to_string()))
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Keygen { out, force } => keygen(&out, force),
        Cmd::Sign {
            file,
            key,
            cluster,
            out,
        } => {
            let key = with_path(&key, VendorSigningKey::from_text(&read(&key)?))?;
            let signed = with_path(&file, sign_file_for(&read(&file)?, &key, cluster))?;
            match out {
                Some(o) => {
                    std::fs::write(&o, signed).with_context(|| format!("writing {}", o.display()))
                }
                None => {
                    print!("{signed}");
                    Ok(())
                }
            }
        }
        Cmd::Verify { file, pubkey } => {
            let key = with_path(&pubkey, VendorKey::from_text(&read(&pubkey)?))?;
            let (lic, mut errors) = parse_all(&read(&file)?);
            // The key file carries no vendor name: it stands for every vendor the file
            // names, which is what a vendor checking their own file means.
            let mut vendors: Vec<String> = lic.lines.iter().map(|l| l.vendor.clone()).collect();
            vendors.sort();
            vendors.dedup();
            let keys: Vec<(String, VendorKey)> = vendors.iter().map(|v| (v.clone(), key)).collect();
            // Every mistake at once: the lines that do not parse, then the signatures
            // of those that do.
            errors.extend(verify_file_all(&lic, &keys));
            report_verify(ctx, &file, lic.lines.len(), &vendors, errors)
        }
        Cmd::Load { file, source } => {
            let text = read(&file)?;
            // Parse here first: a typo is reported with its line and column without a
            // round trip, and with exit code 5.
            with_path(&file, parse(&text).map(drop))?;
            let source = source.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.display().to_string())
            });
            let req = pb::LoadLicenseRequest {
                source: source.clone(),
                text,
            };
            let r = ctx
                .cluster()?
                .call("license load", |ch| {
                    let req = req.clone();
                    async move { AdminClient::new(ch).load_license(req).await }
                })
                .await
                .map_err(|e| refused_file(e, &source))?;
            if ctx.json {
                let dups: Vec<_> = r
                    .duplicates
                    .iter()
                    .map(|d| serde_json::json!({"line": d.line, "of_source": d.of_source, "of_line": d.of_line}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"source": r.source, "lines": r.lines, "features": r.features, "duplicates": dups,
                        "warnings": r.warnings, "revoked_leases": r.revoked_leases})
                );
            } else {
                println!(
                    "loaded {}: {} line(s), features {}",
                    r.source,
                    r.lines,
                    r.features.join(", ")
                );
                for d in &r.duplicates {
                    println!(
                        "note: line {} is the same line as {} line {}: it counts once",
                        d.line, d.of_source, d.of_line
                    );
                }
                for w in &r.warnings {
                    println!("warning: {w}");
                }
                revoked_note(&r.revoked_leases);
            }
            Ok(())
        }
        Cmd::Unload { source } => {
            let req = pb::UnloadLicenseRequest {
                source: source.clone(),
            };
            let r = ctx
                .cluster()?
                .call("license unload", |ch| {
                    let req = req.clone();
                    async move { AdminClient::new(ch).unload_license(req).await }
                })
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"source": source, "revoked_leases": r.revoked_leases})
                );
            } else {
                println!("unloaded {source}");
                revoked_note(&r.revoked_leases);
            }
            Ok(())
        }
        Cmd::List => list(ctx).await,
    }
}

/// The file is invalid for the cluster (its signature fails the cluster's vendor keys, or
/// the cluster's parser refuses it): exit code 5, as for a file `verify` refuses.
#[derive(Debug)]
pub struct InvalidOnCluster(pub String);

impl std::fmt::Display for InvalidOnCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidOnCluster {}

/// The server says what is wrong with a file it refuses as "SOURCE: ..." (invalid
/// argument for its syntax, permission denied for its signature); any other refusal (a
/// certificate without the admin role, say) stays what it is.
fn refused_file(e: tally_client::Error, source: &str) -> anyhow::Error {
    match &e {
        tally_client::Error::Refused { code, message, .. }
            if matches!(
                code,
                tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
            ) && message.starts_with(&format!("{source}: ")) =>
        {
            InvalidOnCluster(message.clone()).into()
        }
        _ => e.into(),
    }
}

/// Prints what `verify` found: every error (one line each on stderr, or in the JSON on
/// stdout), exit code 5 when there is any.
fn report_verify(
    ctx: &Ctx,
    file: &Path,
    lines: usize,
    vendors: &[String],
    errors: Vec<tally_core::Error>,
) -> anyhow::Result<()> {
    if ctx.json {
        let errs: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| match e {
                tally_core::Error::Parse {
                    line,
                    column,
                    message,
                } => serde_json::json!({"line": line, "column": column, "message": message}),
                tally_core::Error::Signature {
                    line,
                    feature,
                    reason,
                } => serde_json::json!({"line": line, "feature": feature, "message": reason}),
                other => serde_json::json!({"message": other.to_string()}),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(), "valid": errors.is_empty(),
                "lines": lines, "vendors": vendors, "errors": errs,
            })
        );
    } else if errors.is_empty() {
        println!(
            "{}: {lines} line(s), every signature valid (vendor {})",
            file.display(),
            vendors.join(", ")
        );
    }
    let Some(last) = errors.len().checked_sub(1) else {
        return Ok(());
    };
    let mut errors = errors;
    let final_error = errors.remove(last);
    if !ctx.json {
        for e in &errors {
            eprintln!("tallyctl: {}: {e}", file.display());
        }
    }
    // The last one is the command's error: its line on stderr and its exit code (5).
    Err(anyhow::Error::new(final_error).context(file.display().to_string()))
}

fn keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    let (sk, pk) = (dir.join("vendor.key"), dir.join("vendor.pub"));
    if !force && (sk.exists() || pk.exists()) {
        anyhow::bail!(
            "{} already holds a vendor key; refusing to replace it (--force replaces it, \
             and every license signed with the old key stops verifying)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let key = VendorSigningKey::from_bytes(&secret);
    write_private(&sk, &format!("{}\n", key.to_text()))?;
    std::fs::write(&pk, format!("{}\n", key.public().to_text()))
        .with_context(|| format!("writing {}", pk.display()))?;
    println!(
        "wrote {} (secret: keep it off servers) and {} (give it to servers)",
        sk.display(),
        pk.display()
    );
    Ok(())
}

/// Writes a file only its owner can read, created that way (never briefly world-readable).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx
        .cluster()?
        .call("license list", |ch| async move {
            AdminClient::new(ch)
                .list_licenses(pb::ListLicensesRequest {})
                .await
        })
        .await?;
    if ctx.json {
        let v: Vec<_> = r
            .licenses
            .iter()
            .map(|l| {
                serde_json::json!({
                    "source": l.source,
                    "vendors": l.vendors,
                    "lines": l.lines.iter().map(|x| serde_json::json!({
                        "line": x.line, "kind": x.kind, "feature": x.feature,
                        "version": x.version, "expiry": x.expiry, "count": x.count,
                        "cluster": (!x.cluster.is_empty()).then_some(&x.cluster),
                        "note": (!x.note.is_empty()).then_some(&x.note),
                        "duplicate_of": x.duplicate_of.as_ref().map(|d| serde_json::json!({
                            "source": d.of_source, "line": d.of_line,
                        })),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if r.licenses.is_empty() {
        println!("no license files loaded");
    }
    for l in &r.licenses {
        println!("{} (vendor {}):", l.source, l.vendors.join(", "));
        let rows: Vec<Vec<String>> = l
            .lines
            .iter()
            .map(|x| {
                let mut note = Vec::new();
                if let Some(d) = &x.duplicate_of {
                    note.push(format!(
                        "same line as {} line {}: counts once",
                        d.of_source, d.of_line
                    ));
                }
                if !x.note.is_empty() {
                    note.push(x.note.clone());
                }
                if !x.cluster.is_empty() {
                    note.push(format!("CLUSTER={}", x.cluster));
                }
                vec![
                    x.line.to_string(),
                    x.kind.clone(),
                    x.feature.clone(),
                    x.version.clone(),
                    x.count.clone(),
                    x.expiry.clone(),
                    note.join("; "),
                ]
            })
            .collect();
        crate::admin::table(
            &[
                "LINE", "KIND", "FEATURE", "VERSION", "COUNT", "EXPIRES", "NOTE",
            ],
            &rows,
        );
    }
    Ok(())
}

/// Says which held seats a load or unload took back, and that their holders are told.
fn revoked_note(leases: &[u64]) {
    if !leases.is_empty() {
        let ids: Vec<String> = leases.iter().map(u64::to_string).collect();
        println!(
            "warning: {} held seat(s) taken back, newest first, as the license now grants fewer (leases {}); their holders are told on their next heartbeat",
            leases.len(),
            ids.join(", ")
        );
    }
}
