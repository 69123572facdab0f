//! Addresses in options: redis:// URLs, "host:port" strings, cluster startup nodes.

use serde_json::Value;

use super::read::{describe, Reader};
use super::{Addr, ConnectionConfig, Secret, TlsConfig};
use crate::error::{Error, Result};

impl ConnectionConfig {
    /// Applies a `redis://`, `rediss://` or `unix://` URL, or a plain unix socket path.
    pub(crate) fn apply_url(&mut self, url: &str) -> Result<()> {
        if url.starts_with('/') {
            self.addr = Addr::Unix(url.into());
            return Ok(());
        }
        let bad =
            || Error::config("option `url` is not a valid redis://, rediss:// or unix:// URL");
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| bad())?;
        match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                self.addr = Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                }
            }
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                self.addr = Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                };
                self.tls = Some(TlsConfig {
                    reject_unauthorized: !insecure,
                    ..TlsConfig::enabled()
                });
            }
            redis::ConnectionAddr::Unix(path) => self.addr = Addr::Unix(path.clone()),
            _ => return Err(bad()),
        }
        let settings = info.redis_settings();
        self.db = settings.db();
        self.username = settings.username().map(str::to_owned);
        self.password = settings.password().map(|p| Secret(p.to_owned()));
        Ok(())
    }
}

/// `"host:port"` (the last colon splits, so IPv6 hosts keep theirs).
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// One startup node: `{ host, port }`, a port, `"host:port"` or a redis:// URL.
pub(crate) fn cluster_node(v: &Value, i: usize) -> Result<(String, u16)> {
    let bad = || {
        Error::config(format!(
            "option `nodes[{i}]` must be {{ host, port }}, a port or \"host:port\", got {}",
            describe(v)
        ))
    };
    match v {
        Value::Number(n) => {
            let port = n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(bad)?;
            Ok(("localhost".to_owned(), port))
        }
        Value::String(s) if s.contains("://") => {
            let mut c = ConnectionConfig::default();
            c.apply_url(s).map_err(|_| bad())?;
            match c.addr {
                Addr::Tcp { host, port } => Ok((host, port)),
                Addr::Unix(_) => Err(bad()),
            }
        }
        Value::String(s) => split_host_port(s)
            .or_else(|| {
                s.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(|p| ("localhost".to_owned(), p))
            })
            .ok_or_else(bad),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "host" | "port")) {
                return Err(Error::config(format!(
                    "option `nodes[{i}].{k}` is not supported (host, port)"
                )));
            }
            let r = Reader::new(o, "");
            let in_node = |e: Error| Error::config(format!("option `nodes[{i}]`: {}", e.message()));
            let host = r
                .string("host")
                .map_err(in_node)?
                .unwrap_or_else(|| "localhost".to_owned());
            let port = r.port("port").map_err(in_node)?.unwrap_or(6379);
            Ok((host, port))
        }
        _ => Err(bad()),
    }
}
