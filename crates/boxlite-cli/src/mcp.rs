//! `boxlite mcp`: the MCP server over stdio or streamable HTTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use boxlite::Boxlite;
use boxlite_mcp::{HttpConfig, HttpServer, McpConfig};

use crate::args::McpFlags;

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

impl McpFlags {
    /// The server's configuration these flags ask for, or which flag is wrong.
    pub(crate) fn config(&self) -> Result<McpConfig> {
        let max_timeout = boxlite_mcp::tools::MAX_TIMEOUT_SECS;
        if self.exec_timeout == 0 || self.exec_timeout > max_timeout {
            bail!(
                "invalid --exec-timeout {}: give 1 to {max_timeout} seconds",
                self.exec_timeout
            );
        }
        if self.max_boxes == 0 {
            bail!("invalid --max-boxes 0: a session needs at least 1 box");
        }
        Ok(McpConfig {
            keep_boxes: self.keep_boxes,
            all_boxes: self.all_boxes,
            max_output_bytes: self.max_output,
            max_file_bytes: parse_bytes(&self.max_file_size)?,
            exec_timeout: Duration::from_secs(self.exec_timeout),
            max_boxes: self.max_boxes,
            code_image: self.code_image.clone(),
            max_memory_mib: self.max_memory,
            max_cpus: self.max_cpus,
            allow_private_net: self.allow_private_net,
            ..McpConfig::default()
        })
    }
}

pub(crate) async fn mcp_cmd(rt: Boxlite, flags: McpFlags) -> Result<i32> {
    let cfg = flags.config()?;
    let Some(listen) = &flags.http else {
        boxlite_mcp::serve_stdio(rt, cfg, crate::serve::terminated()).await?;
        return Ok(0);
    };
    let addr = parse_listen(listen)?;
    let api_key = crate::serve::api_key(flags.api_key_file)?;
    let server = HttpServer::bind(rt, cfg, HttpConfig { addr, api_key }).await?;
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
