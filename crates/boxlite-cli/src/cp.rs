//! `boxlite cp`: copy between the host and a box, `docker cp` style.

use anyhow::{Result, bail};
use boxlite::{Boxlite, CopyOptions};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    Host(String),
    Box {
        key: String,
        path: String,
    },
}

/// `BOX:PATH` when the part before the first `:` could be a box id or name (no `/`,
/// not empty); anything else is a host path (write `./a:b` for a host file with a
/// colon in its name).
pub fn parse(arg: &str) -> Place {
    if arg == "-" {
        return Place::Stream;
    }
    match arg.split_once(':') {
        Some((key, path)) if !key.is_empty() && !key.contains('/') && !key.starts_with('.') => {
            Place::Box {
                key: key.to_string(),
                path: path.to_string(),
            }
        }
        _ => Place::Host(arg.to_string()),
    }
}

fn box_path(path: String) -> Result<String> {
    if !path.starts_with('/') {
        bail!("the path in the box must be absolute, like BOX:/dir/file (got {path:?})");
    }
    Ok(path)
}

/// What a `cp SRC DST` asks for, its box path checked; the local and the remote CLI
/// carry it out.
#[derive(Debug, PartialEq, Eq)]
pub enum Copy {
    /// `cp - BOX:DIR`: a tar on stdin.
    TarIn { key: String, path: String },
    /// `cp BOX:PATH -`: a tar on stdout.
    TarOut { key: String, path: String },
    In {
        host: String,
        key: String,
        path: String,
    },
    Out {
        key: String,
        path: String,
        host: String,
    },
}

impl Copy {
    pub fn parse(src: &str, dst: &str) -> Result<Copy> {
        Ok(match (parse(src), parse(dst)) {
            (Place::Stream, Place::Box { key, path }) => Copy::TarIn {
                key,
                path: box_path(path)?,
            },
            (Place::Box { key, path }, Place::Stream) => Copy::TarOut {
                key,
                path: box_path(path)?,
            },
            (Place::Host(host), Place::Box { key, path }) => Copy::In {
                host,
                key,
                path: box_path(path)?,
            },
            (Place::Box { key, path }, Place::Host(host)) => Copy::Out {
                key,
                path: box_path(path)?,
                host,
            },
            (Place::Box { .. }, Place::Box { .. }) => {
                bail!(
                    "copying from one box to another is not supported; copy out to the host, then in"
                )
            }
            (Place::Stream, Place::Stream)
            | (Place::Stream, Place::Host(_))
            | (Place::Host(_), Place::Stream) => {
                bail!(
                    "`-` (a tar stream) needs a box on the other side: `cp - BOX:DIR` or `cp BOX:PATH -`"
                )
            }
            (Place::Host(_), Place::Host(_)) => {
                bail!(
                    "one side of a copy must be BOX:PATH (a box id or name, a colon, an absolute path)"
                )
            }
        })
    }
}

pub async fn run(rt: &Boxlite, src: &str, dst: &str, opts: CopyOptions) -> Result<i32> {
    match Copy::parse(src, dst)? {
        Copy::TarIn { key, path } => {
            let b = rt.get(&key).await?;
            b.copy_in_tar(tokio::io::stdin(), &path, opts.overwrite)
                .await?;
        }
        Copy::TarOut { key, path } => {
            let b = rt.get(&key).await?;
            b.copy_out_tar(&path, &mut tokio::io::stdout(), &opts)
                .await?;
        }
        Copy::In { host, key, path } => {
            let b = rt.get(&key).await?;
            b.copy_in(&host, &path, &opts).await?;
        }
        Copy::Out { key, path, host } => {
            let b = rt.get(&key).await?;
            b.copy_out(&path, &host, &opts).await?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_paths_are_told_from_host_paths() {
        assert_eq!(
            parse("web:/etc/hosts"),
            Place::Box {
                key: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(parse("-"), Place::Stream);
        assert_eq!(parse("./a:b"), Place::Host("./a:b".into()));
        assert_eq!(parse("/abs/a:b"), Place::Host("/abs/a:b".into()));
        assert_eq!(parse("plain"), Place::Host("plain".into()));
        assert_eq!(parse(":x"), Place::Host(":x".into()));
    }
}
