//! redis-rs clients and TLS material made from our settings, for one server and for a
//! cluster's nodes.

use crate::config::{Addr, ConnectionConfig, TlsConfig};
use crate::error::{Error, Result};

/// Builds the redis-rs client for the settings.
pub(crate) fn build_client(config: &ConnectionConfig) -> Result<redis::Client> {
    build_client_as(config, redis::ProtocolVersion::RESP2)
}

/// [`build_client`] speaking `protocol` (RESP3 for subscriptions, whose messages are pushes).
pub(crate) fn build_client_as(
    config: &ConnectionConfig,
    protocol: redis::ProtocolVersion,
) -> Result<redis::Client> {
    let redis_settings = {
        let mut r = redis::RedisConnectionInfo::default()
            .set_db(config.db)
            .set_protocol(protocol);
        r = match &config.client_info {
            Some(name) => r.set_lib_name(name, env!("CARGO_PKG_VERSION")),
            None => r.set_skip_set_lib_name(),
        };
        if let Some(user) = &config.username {
            r = r.set_username(user);
        }
        if let Some(password) = &config.password {
            r = r.set_password(&password.0);
        }
        r
    };
    let addr = match (&config.addr, &config.tls) {
        (Addr::Tcp { host, port }, None) => redis::ConnectionAddr::Tcp(host.clone(), *port),
        (Addr::Tcp { host, port }, Some(tls)) => redis::ConnectionAddr::TcpTls {
            // The certificate is checked against `servername` when given; the resolver in
            // `async_config` still connects to `host`.
            host: tls.servername.clone().unwrap_or_else(|| host.clone()),
            port: *port,
            insecure: !tls.reject_unauthorized,
            tls_params: None,
        },
        (Addr::Unix(path), _) => redis::ConnectionAddr::Unix(path.clone()),
    };
    let tcp = tcp_settings(config);
    let info = redis::IntoConnectionInfo::into_connection_info(addr)
        .map_err(|_| Error::config("invalid address"))?
        .set_redis_settings(redis_settings)
        .set_tcp_settings(tcp);
    match &config.tls {
        Some(tls) if tls.ca.is_some() || tls.cert.is_some() => {
            redis::Client::build_with_tls(info, tls_certificates(tls)).map_err(|_| {
                Error::config("option `tls`: the certificates or key could not be read as PEM")
            })
        }
        _ => redis::Client::open(info).map_err(|_| Error::config("invalid connection settings")),
    }
}

/// The socket options of `config` (`noDelay`, `keepAlive`) as redis-rs takes them, for one
/// server and for every node of a cluster.
pub(crate) fn tcp_settings(config: &ConnectionConfig) -> redis::io::tcp::TcpSettings {
    let mut tcp = redis::io::tcp::TcpSettings::default().set_nodelay(config.no_delay);
    if let Some(delay) = config.keep_alive {
        tcp = tcp.set_keepalive(redis::io::tcp::socket2::TcpKeepalive::new().with_time(delay));
    }
    tcp
}

/// The TLS material of `tls` as redis-rs takes it.
pub(crate) fn tls_certificates(tls: &TlsConfig) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.as_bytes().to_vec(),
                client_key: key.as_bytes().to_vec(),
            }),
            _ => None,
        },
        root_cert: tls.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}
