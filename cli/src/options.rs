//! `tallyctl options`: the site's options file. `load` parses it here first (every
//! mistake with its line and column, no round trip) and sends it through the cluster's
//! log; `show` prints the one in force; `check` only parses, offline, for an admin's
//! editor loop or a CI job.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::options::{parse_all, OptionsError, MAX_FILE_BYTES};

use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Replace the cluster's options file with FILE (an empty file clears it). Every
    /// node enforces it from the same log entry on; seats already held are kept.
    Load {
        /// The options file.
        file: PathBuf,
    },
    /// The options file in force, one directive on each of its original lines.
    Show,
    /// Parse FILE offline and list every mistake with its line and column.
    Check {
        /// The options file.
        file: PathBuf,
    },
}

/// An options file with mistakes (exit code 5, as for a bad license file); they were
/// printed one a line before.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {count} mistake(s), see above")]
pub struct Invalid {
    path: String,
    count: usize,
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Check { file } => {
            let text = read(&file)?;
            let (options, errors) = parse_all(&text);
            report(ctx, &file, options.lines().len(), &errors)
        }
        Cmd::Load { file } => {
            let text = read(&file)?;
            let (_, errors) = parse_all(&text);
            if !errors.is_empty() {
                return report(ctx, &file, 0, &errors);
            }
            let source = file.display().to_string();
            let req = pb::LoadOptionsRequest {
                text,
                source: source.clone(),
            };
            let r = ctx
                .cluster()?
                .call("options load", |ch| {
                    let req = req.clone();
                    async move { AdminClient::new(ch).load_options(req).await }
                })
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"file": source, "directives": r.directives, "not_enforced": r.not_enforced})
                );
            } else {
                if r.directives == 0 {
                    println!("{source}: no directives: the options file was cleared; everyone may use every feature");
                } else {
                    println!(
                        "{source}: {} directive(s) loaded; they hold from now on, and seats already held are kept",
                        r.directives
                    );
                }
                for n in &r.not_enforced {
                    println!("  note: {n}");
                }
            }
            Ok(())
        }
        Cmd::Show => {
            let r = ctx
                .cluster()?
                .call("options show", |ch| async move {
                    AdminClient::new(ch)
                        .get_options(pb::GetOptionsRequest {})
                        .await
                })
                .await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"text": r.text, "directives": r.directives, "not_enforced": r.not_enforced})
                );
            } else if r.directives == 0 {
                println!("no options file is loaded: everyone may use every feature");
            } else {
                print!("{}", r.text);
                for n in &r.not_enforced {
                    eprintln!("note: {n}");
                }
            }
            Ok(())
        }
    }
}

/// Prints every mistake (or that there is none); an error when there were any.
fn report(
    ctx: &Ctx,
    file: &Path,
    directives: usize,
    errors: &[OptionsError],
) -> anyhow::Result<()> {
    let path = file.display().to_string();
    if ctx.json {
        let errs: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| serde_json::json!({"line": e.line(), "column": e.column(), "message": e.to_string()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"file": path, "valid": errors.is_empty(), "directives": directives, "errors": errs})
        );
    } else if errors.is_empty() {
        println!("{path}: {directives} directive(s), no mistakes");
    } else {
        // `file: line 3, column 9: ...`, the shape editors and CI logs link from.
        for e in errors {
            println!("{path}: {e}");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid {
            path,
            count: errors.len(),
        }
        .into())
    }
}

/// The file's text, read no further than an options file may be long: the parser
/// refuses more anyway, and a mistaken huge file must not fill memory first.
fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::Error::new(Invalid {
            path: path.display().to_string(),
            count: 1,
        })
        .context(format!(
            "{}: the file is not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
