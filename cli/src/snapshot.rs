//! `tallyctl snapshot save|inspect`: backups of the cluster's state (see deploy/README.md,
//! "Backup and disaster recovery"). The server writes the file's bytes (the Admin
//! `SaveSnapshot` call); this side checks them whole and writes them so that FILE is
//! either absent or a complete backup.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::backup::{decode, sha256_hex, Header};

use crate::Ctx;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Save a backup (admin): the ledger at one applied index after a linearizable read
    /// point, with its log index, term, cluster name and id, the membership and the usage
    /// history; `tallyd restore` seeds a new cluster from it.
    Save {
        /// Where to write it (replaced whole, never left half-written).
        file: PathBuf,
    },
    /// Check a backup file and show what it holds (offline).
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Save { file } => save(ctx, &file).await,
        Cmd::Inspect { file } => inspect(ctx, &file),
    }
}

/// A backup of a large site takes longer than one ordinary call may.
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// The chunks are 1 MiB; this leaves room.
const MAX_CHUNK: usize = 8 << 20;

async fn save(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut opts = ctx.connect_options()?;
    opts.request_timeout = opts.request_timeout.max(SAVE_TIMEOUT);
    let cluster = ctx.cluster()?.with_options(opts);
    let chunks = cluster
        .call("snapshot save", |ch| async move {
            let mut stream = AdminClient::new(ch)
                .max_decoding_message_size(MAX_CHUNK)
                .save_snapshot(pb::SaveSnapshotRequest {})
                .await?
                .into_inner();
            let mut chunks = Vec::new();
            while let Some(c) = stream.message().await? {
                chunks.push(c);
            }
            Ok(tonic::Response::new(chunks))
        })
        .await?;
    let first = chunks.first().context("the server sent no backup")?;
    let (total, want_sha) = (first.total_bytes, first.sha256.clone());
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    anyhow::ensure!(
        bytes.len() as u64 == total,
        "the backup arrived cut short ({} of {total} bytes); nothing written, try again",
        bytes.len()
    );
    anyhow::ensure!(
        sha256_hex(&bytes) == tally_core::backup::hex(&want_sha),
        "the backup arrived damaged (SHA-256 differs from the server's); nothing written, try again"
    );
    let (header, _) = decode(&bytes).context("the server's backup does not check out")?;
    write_atomically(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "bytes": bytes.len(),
                "sha256": sha256_hex(&bytes),
                "seconds": secs,
                "header": header,
            })
        );
    } else {
        println!(
            "saved {} ({} bytes, sha256 {}) in {secs:.2} s",
            file.display(),
            bytes.len(),
            sha256_hex(&bytes)
        );
        describe(&header);
    }
    Ok(())
}

fn inspect(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (header, _) =
        decode(&bytes).with_context(|| format!("{} is not a usable backup", file.display()))?;
    if ctx.json {
        println!("{}", serde_json::to_string(&header)?);
    } else {
        println!(
            "{}: a whole Tally backup (the checksum matches)",
            file.display()
        );
        describe(&header);
    }
    Ok(())
}

fn describe(h: &Header) {
    println!(
        "cluster \"{}\"{}, log index {} term {}, ledger time {}",
        h.cluster_name,
        if h.cluster_id.is_empty() {
            String::new()
        } else {
            format!(" (id {})", h.cluster_id)
        },
        h.index,
        h.term,
        crate::listing::when(h.ledger_time_ms)
    );
    println!(
        "{} session(s), {} lease(s), {} usage-history record(s); members then: {}; written by tallyd {}",
        h.sessions,
        h.leases,
        h.history_records,
        h.members
            .iter()
            .map(|m| format!("{}={}{}", m.id, m.addr, if m.voter { "" } else { " (learner)" }))
            .collect::<Vec<_>>()
            .join(", "),
        h.tallyd_version
    );
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it, synced,
/// renamed over it, the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
