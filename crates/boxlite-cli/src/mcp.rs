//! `boxlite mcp`: the MCP server over stdio or streamable HTTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use boxlite::Boxlite;
use boxlite_mcp::{HttpConfig, HttpServer, McpConfig};

/// The server's flags, as `boxlite mcp` takes them.
#[derive(Debug)]
pub(crate) struct McpArgs {
    pub(crate) http: Option<String>,
    pub(crate) api_key_file: Option<PathBuf>,
    pub(crate) cfg: McpConfig,
}

/// `[HOST:]PORT`: a port alone listens on 127.0.0.1; an IPv6 host goes in brackets.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr> {
    const FORM: &str = "use PORT, HOST:PORT or [IPV6]:PORT, with HOST an IP address";
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && host == "localhost"
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    bail!("invalid --http {s:?}: {FORM}")
}

/// A byte size: a number, optionally with K, M or G (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, shift) = match t
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        u if u.ends_with('K') => (&t[..u.len() - 1], 10),
        u if u.ends_with('M') => (&t[..u.len() - 1], 20),
        u if u.ends_with('G') => (&t[..u.len() - 1], 30),
        u => (&t[..u.len()], 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| {
            format!("invalid size {s:?}: use a positive number of bytes, optionally with K, M or G")
        })?;
    n.checked_mul(1 << shift)
        .filter(|b| *b <= 1 << 30)
        .with_context(|| format!("invalid size {s:?}: at most 1G"))
}

impl McpArgs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        http: Option<String>,
        api_key_file: Option<PathBuf>,
        keep_boxes: bool,
        all_boxes: bool,
        max_output: usize,
        max_file_size: &str,
        exec_timeout: u64,
        max_boxes: usize,
        code_image: String,
    ) -> Result<McpArgs> {
        if exec_timeout == 0 || exec_timeout > boxlite_mcp::tools::MAX_TIMEOUT_SECS {
            bail!(
                "invalid --exec-timeout {exec_timeout}: give 1 to {} seconds",
                boxlite_mcp::tools::MAX_TIMEOUT_SECS
            );
        }
        if max_boxes == 0 {
            bail!("invalid --max-boxes 0: a session needs at least 1 box");
        }
        Ok(McpArgs {
            http,
            api_key_file,
            cfg: McpConfig {
                keep_boxes,
                all_boxes,
                max_output_bytes: max_output,
                max_file_bytes: parse_bytes(max_file_size)?,
                exec_timeout: Duration::from_secs(exec_timeout),
                max_boxes,
                code_image,
                ..McpConfig::default()
            },
        })
    }
}

pub(crate) async fn mcp_cmd(rt: Boxlite, args: McpArgs) -> Result<i32> {
    let Some(listen) = &args.http else {
        boxlite_mcp::serve_stdio(rt, args.cfg, crate::serve::terminated()).await?;
        return Ok(0);
    };
    let addr = parse_listen(listen)?;
    let api_key = crate::serve::api_key(args.api_key_file)?;
    let server = HttpServer::bind(rt, args.cfg, HttpConfig { addr, api_key }).await?;
    // The one line this command prints: where it serves (the port, for port 0).
    eprintln!(
        "boxlite mcp: serving on http://{}/mcp",
        server.local_addr()?
    );
    server.run(crate::serve::terminated()).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_listen("8200").unwrap().to_string(), "127.0.0.1:8200");
        assert_eq!(parse_listen("0.0.0.0:9").unwrap().to_string(), "0.0.0.0:9");
        assert_eq!(parse_listen("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(
            parse_listen("localhost:7").unwrap().to_string(),
            "127.0.0.1:7"
        );
        for bad in ["", "x", "host:1", "1.2.3.4", "70000", "1.2.3.4:70000"] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(e.contains("--http"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("8M").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("2k").unwrap(), 2048);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        for bad in ["", "0", "-1", "1T", "2G", "M", "1.5M"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
