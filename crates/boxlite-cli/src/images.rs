//! Image commands: pull (with progress), images, rmi, image prune, load, login, logout.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use boxlite::Boxlite;
use boxlite::images::registry::{Credential, Progress};

use crate::stats::bytes;

/// Progress on stderr: one line rewritten in place on a terminal, otherwise a line per
/// finished layer, so logs stay readable.
pub(crate) struct Display {
    tty: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: u64,
    layers: usize,
    done: HashMap<String, u64>,
    finished: usize,
}

impl Display {
    pub(crate) fn new() -> Self {
        Display {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn event(&self, reference: &str, p: Progress) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        match p {
            Progress::Resolved {
                layers,
                total_bytes,
            } => {
                s.layers = layers;
                s.total = total_bytes;
                let _ = writeln!(
                    err,
                    "{reference}: {layers} layer{}, {}",
                    if layers == 1 { "" } else { "s" },
                    bytes(total_bytes)
                );
            }
            Progress::Layer {
                digest,
                done,
                total,
                cached,
            } => {
                // The config blob is reported too; only layers count.
                let first = !s.done.contains_key(&digest);
                s.done.insert(digest.clone(), done);
                let finished = done >= total;
                if finished && (first || self.tty || cached) {
                    s.finished += 1;
                }
                let short = digest.trim_start_matches("sha256:").get(..12).unwrap_or("");
                if self.tty {
                    let got: u64 = s.done.values().sum();
                    let _ = write!(
                        err,
                        "\r\x1b[Kdownloading {} of {}",
                        bytes(got.min(s.total.max(got))),
                        bytes(s.total)
                    );
                } else if finished {
                    let _ = writeln!(
                        err,
                        "  {short}: {} {}",
                        bytes(total),
                        if cached {
                            "(already here)"
                        } else {
                            "downloaded"
                        }
                    );
                }
            }
            Progress::Building { layers } => {
                if self.tty {
                    let _ = writeln!(err);
                }
                let _ = writeln!(err, "building the root filesystem from {layers} layers");
            }
            Progress::Built { ms, cached, build } => {
                if cached {
                    let _ = writeln!(err, "root filesystem already built");
                } else {
                    let secs = |ms: u64| ms as f64 / 1000.0;
                    let detail = build
                        .map(|b| {
                            if b.builder == "vm" {
                                format!(
                                    " in a builder VM (layers read {:.1}s, VM boot {:.1}s, written {:.1}s, check and shrink {:.1}s; {} files, {})",
                                    secs(b.plan_ms),
                                    secs(b.boot_ms),
                                    secs(b.apply_ms),
                                    secs(b.finish_ms),
                                    b.entries,
                                    bytes(b.bytes)
                                )
                            } else {
                                format!(
                                    " (layers read {:.1}s, written {:.1}s; {} files, {})",
                                    secs(b.plan_ms),
                                    secs(b.apply_ms),
                                    b.entries,
                                    bytes(b.bytes)
                                )
                            }
                        })
                        .unwrap_or_default();
                    let _ = writeln!(err, "root filesystem built in {:.1}s{detail}", secs(ms));
                }
            }
        }
    }
}

pub async fn pull(rt: &Boxlite, references: &[String], quiet: bool) -> Result<i32> {
    let mut failed = 0;
    for r in references {
        let display = Display::new();
        let shown = r.clone();
        let res = rt
            .pull(r, &|p| {
                if !quiet {
                    display.event(&shown, p)
                }
            })
            .await;
        match res {
            Ok(img) => println!("{}@{}", img.reference, img.digest),
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 125 })
}

pub async fn list(rt: &Boxlite, quiet: bool, format: &str) -> Result<i32> {
    print_images(&rt.images().await, quiet, format)?;
    Ok(0)
}

/// `images` output for a list of images (the local store's, or a server's).
pub(crate) fn print_images(
    images: &[boxlite::images::ImageInfo],
    quiet: bool,
    format: &str,
) -> Result<()> {
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&images)?),
        "table" if quiet => {
            for i in images {
                println!("{}", i.reference);
            }
        }
        "table" => {
            let w = images
                .iter()
                .map(|i| i.reference.len())
                .max()
                .unwrap_or(0)
                .max("REFERENCE".len());
            println!(
                "{:w$}  {:12}  {:>9}  CREATED",
                "REFERENCE", "DIGEST", "SIZE"
            );
            for i in images {
                let short = i.digest.trim_start_matches("sha256:");
                println!(
                    "{:w$}  {:12}  {:>9}  {}",
                    i.reference,
                    short.get(..12).unwrap_or(short),
                    bytes(i.size),
                    i.created.as_deref().unwrap_or("-")
                );
            }
        }
        other => bail!("invalid --format {other:?}; valid values are table and json"),
    }
    Ok(())
}

pub async fn remove(rt: &Boxlite, keys: &[String], force: bool) -> Result<i32> {
    let mut failed = 0;
    for key in keys {
        match rt.remove_image(key, force).await {
            Ok(r) => {
                for u in &r.untagged {
                    println!("Untagged: {u}");
                }
                report_pruned(&r.pruned);
            }
            Err(e) => {
                eprintln!("boxlite: error: {}", boxlite::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 125 })
}

fn report_pruned(p: &boxlite::images::PruneReport) {
    if p.bases + p.records + p.blobs + p.templates.len() > 0 {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        println!(
            "Deleted: {} root filesystem{}, {} blob{}, {} template{}; {} freed",
            p.bases,
            plural(p.bases),
            p.blobs,
            plural(p.blobs),
            p.templates.len(),
            plural(p.templates.len()),
            bytes(p.bytes)
        );
    }
}

/// `boxlite image templates`: the warm-start templates.
pub async fn templates(rt: &Boxlite, format: &str) -> Result<i32> {
    let list = rt.templates().await;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if format != "table" {
        anyhow::bail!("unknown format {format:?}; use table or json");
    }
    println!(
        "{:<26} {:<30} {:>4} {:>8} {:>9} {:>10}  CREATED",
        "KEY", "IMAGE", "CPUS", "MEMORY", "NETWORK", "SIZE"
    );
    for t in list {
        println!(
            "{:<26} {:<30} {:>4} {:>7}M {:>9} {:>10}  {}",
            t.key,
            t.image,
            t.cpus,
            t.memory_mib,
            if t.network { "on" } else { "none" },
            bytes(t.size_bytes),
            crate::boxes::ago(t.created_at)
        );
    }
    Ok(0)
}

pub async fn prune(rt: &Boxlite) -> Result<i32> {
    let p = rt.prune_images().await?;
    report_pruned(&p);
    if p.bases + p.records + p.blobs + p.templates.len() == 0 {
        println!("Nothing to remove");
    }
    Ok(0)
}

pub async fn load(rt: &Boxlite, input: &str, tag: Option<&str>) -> Result<i32> {
    let display = Display::new();
    let loaded = rt
        .load(std::path::Path::new(input), tag, &|p| {
            display.event(input, p)
        })
        .await?;
    for img in loaded {
        println!("{}@{}", img.reference, img.digest);
    }
    Ok(0)
}

/// Read a secret from stdin: the whole input when it is a pipe, else one line typed
/// with echo off. Secrets never come from the command line, where `/proc/*/cmdline`
/// shows them to every user.
fn read_secret(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut s = String::new();
        stdin
            .lock()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    eprint!("{prompt}");
    let _quiet = crate::term::NoEcho::enable().context("turning off echo")?;
    let mut s = String::new();
    stdin.read_line(&mut s).context("reading the terminal")?;
    eprintln!();
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(rt: &Boxlite, registry: &str, username: Option<&str>, token: bool) -> Result<i32> {
    let cred = if token {
        if username.is_some() {
            bail!("--token and --username do not go together: a token is the whole credential");
        }
        Credential::Bearer {
            token: read_secret("Token: ")?,
        }
    } else {
        let Some(user) = username else {
            bail!("give --username (the password is read from stdin), or --token");
        };
        Credential::Basic {
            username: user.to_string(),
            password: read_secret("Password: ")?,
        }
    };
    if matches!(&cred, Credential::Basic { password, .. } if password.is_empty())
        || matches!(&cred, Credential::Bearer { token } if token.is_empty())
    {
        bail!("the secret read from stdin is empty");
    }
    let host = rt.login(registry, cred)?;
    println!("Login saved for {host}");
    Ok(0)
}

pub fn logout(rt: &Boxlite, registry: &str) -> Result<i32> {
    if rt.logout(registry)? {
        println!("Removed login for {registry}");
    } else {
        println!("No login saved for {registry}");
    }
    Ok(0)
}

/// `--disk-size`: a number of MiB, or with a unit suffix (K, M, G, T; binary).
pub fn parse_size_mib(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1.0),
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "K" => 1.0 / 1024.0,
                "M" | "" => 1.0,
                "G" => 1024.0,
                "T" => 1024.0 * 1024.0,
                _ => bail!("invalid --disk-size {s:?}: use MiB, or a number with K, M, G or T"),
            };
            (&t[..i], m)
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .with_context(|| {
            format!("invalid --disk-size {s:?}: use MiB, or a number with K, M, G or T")
        })?;
    // Positive and finite; the library checks the range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mib = (v * mult).ceil().min(1e18) as u64;
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_parse_with_binary_units() {
        assert_eq!(parse_size_mib("512").unwrap(), 512);
        assert_eq!(parse_size_mib("4G").unwrap(), 4096);
        assert_eq!(parse_size_mib("1.5GiB").unwrap(), 1536);
        assert_eq!(parse_size_mib("300m").unwrap(), 300);
        assert_eq!(parse_size_mib("1T").unwrap(), 1 << 20);
        for bad in ["", "x", "-1G", "4Q", "G"] {
            assert!(parse_size_mib(bad).is_err(), "{bad}");
        }
    }
}
