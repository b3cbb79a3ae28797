//! How the service talks to MySQL-protocol servers: connection options with a
//! timeout, errors sorted into "unreachable" and "refused", identifier quoting.
//!
//! Every connection goes over TCP to the address given (never a local socket
//! the driver might prefer), so what is tested is what runs across networks,
//! and is secured as its [`TlsOptions`] say (see [`crate::tls`]). A TLS
//! handshake that fails is a refusal that says why, not an outage to retry.

use crate::hostmap::HostMapping;
use crate::secret::Secret;
use crate::tls::{self, TlsMode, TlsOptions};
use mysql_async::{Conn, Opts, OptsBuilder};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where and as whom to connect, and how the connection is secured.
#[derive(Clone, Debug)]
pub struct ServerAddr<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a Secret,
    pub tls: &'a TlsOptions,
}

/// The driver's options for `addr`, TLS included. Under `verify_ca` the name
/// to verify is the one [`connect`] last found for this server, so build a
/// pool's options after a first [`connect`] (as [`pool_opts`] does).
pub fn opts(addr: &ServerAddr<'_>, database: Option<&str>) -> Opts {
    let name = match addr.tls.mode {
        TlsMode::VerifyCa => tls::known_name(addr.tls, addr.host, addr.port),
        _ => None,
    };
    base(addr, database)
        .ssl_opts(tls::ssl_opts(addr.tls, name.as_deref()))
        .into()
}

fn base(addr: &ServerAddr<'_>, database: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.host)
        .tcp_port(addr.port)
        .user(Some(addr.user))
        .pass(Some(addr.password.expose()))
        .db_name(database)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
}

/// Options for a pool of connections to `addr`: one connection is made
/// first, so the pool uses what worked (plain text where `preferred` found
/// no TLS; the name `verify_ca` found).
pub async fn pool_opts(
    addr: &ServerAddr<'_>,
    database: Option<&str>,
    timeout: Duration,
) -> Result<Opts, ConnectError> {
    let conn = connect(addr, None, timeout).await?;
    let secure = conn.opts().ssl_opts().is_some();
    let _ = conn.disconnect().await;
    let opts = opts(addr, database);
    Ok(if secure {
        opts
    } else {
        OptsBuilder::from_opts(opts).ssl_opts(None).into()
    })
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered in time, or the network said no: check address and network.
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The server answered and refused (bad credentials, unknown database, …).
    #[error("{address} refused the connection: {reason}")]
    Refused { address: String, reason: String },
}

impl ConnectError {
    /// Unreachable is transient (the network may come back), refused definite.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            ConnectError::Unreachable { .. } => crate::error::Kind::Transient,
            ConnectError::Refused { .. } => crate::error::Kind::Definite,
        }
    }
}

pub async fn connect(
    addr: &ServerAddr<'_>,
    database: Option<&str>,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    connect_with(addr, opts(addr, database), timeout).await
}

/// [`connect`] with options built from [`opts`] and adjusted by the caller.
pub async fn connect_with(
    addr: &ServerAddr<'_>,
    opts: Opts,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    let address = format!("{}:{}", addr.host, addr.port);
    let mode = addr.tls.mode;
    // Under verify_ca, the options for the name a certificate signed by the
    // CA holds, learnt (`fresh`) or recalled.
    let with_ca_name = |opts: Opts, fresh: bool| {
        let address = address.clone();
        async move {
            let name = tls::verify_ca_name(addr.tls, addr.host, addr.port, timeout, fresh)
                .await
                .map_err(|e| match e {
                    tls::ProbeError::Unreachable(reason) => {
                        ConnectError::Unreachable { address, reason }
                    }
                    tls::ProbeError::Refused(reason) => ConnectError::Refused { address, reason },
                })?;
            Ok::<Opts, ConnectError>(
                OptsBuilder::from_opts(opts)
                    .ssl_opts(tls::ssl_opts(addr.tls, Some(&name)))
                    .into(),
            )
        }
    };
    let opts = match mode {
        TlsMode::VerifyCa => with_ca_name(opts, false).await?,
        _ => opts,
    };
    match attempt(addr, &address, opts.clone(), timeout).await {
        Err(Failure::NoTls) if mode == TlsMode::Preferred => {
            // The server offers no TLS: `preferred` goes on in plain text.
            let plain = OptsBuilder::from_opts(opts).ssl_opts(None).into();
            attempt(addr, &address, plain, timeout)
                .await
                .map_err(|f| f.into_error(&address, mode))
        }
        Err(Failure::Tls(_)) if mode == TlsMode::VerifyCa => {
            // The server's certificate may have changed since its name was
            // learnt: learn it again, once.
            let again = with_ca_name(opts, true).await?;
            attempt(addr, &address, again, timeout)
                .await
                .map_err(|f| f.into_error(&address, mode))
        }
        other => other.map_err(|f| f.into_error(&address, mode)),
    }
}

/// MariaDB's error for a refused login.
pub const ER_ACCESS_DENIED: u16 = 1045;

/// A connection; a refused login is tried twice more. The driver
/// (mysql_common 0.37) drops a trailing zero byte of every auth-switch
/// nonce, so an `ed25519` account's login fails whenever the server's random
/// 32-byte nonce ends in 0x00 (1 in 256): the next login gets another
/// nonce. A wrong password is refused three times, as once.
pub async fn new_conn(opts: Opts) -> Result<Conn, mysql_async::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match Conn::new(opts.clone()).await {
            Err(e) if tries < 3 && server_code(&e) == Some(ER_ACCESS_DENIED) => continue,
            other => return other,
        }
    }
}

/// Why one attempt failed.
enum Failure {
    /// The server offers no TLS and the options asked for it.
    NoTls,
    /// The TLS handshake failed: the words say why.
    Tls(String),
    Other(ConnectError),
}

impl Failure {
    fn into_error(self, address: &str, mode: TlsMode) -> ConnectError {
        match self {
            Failure::NoTls => ConnectError::Refused {
                address: address.to_string(),
                reason: tls::no_tls(mode),
            },
            Failure::Tls(reason) => ConnectError::Refused {
                address: address.to_string(),
                reason,
            },
            Failure::Other(e) => e,
        }
    }
}

async fn attempt(
    addr: &ServerAddr<'_>,
    address: &str,
    opts: Opts,
    timeout: Duration,
) -> Result<Conn, Failure> {
    let address = address.to_string();
    let name = addr
        .tls
        .server_name
        .clone()
        .filter(|_| addr.tls.mode == TlsMode::VerifyIdentity)
        .unwrap_or_else(|| addr.host.to_string());
    match tokio::time::timeout(timeout, new_conn(opts)).await {
        Err(_) => Err(Failure::Other(ConnectError::Unreachable {
            address,
            reason: format!("no answer within {} s", timeout.as_secs_f64()),
        })),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(mysql_async::Error::Driver(
            mysql_async::DriverError::NoClientSslFlagFromServer,
        ))) => Err(Failure::NoTls),
        Ok(Err(e)) => {
            if let Some(reason) = tls::describe(&e, addr.tls.mode, &name) {
                return Err(Failure::Tls(reason));
            }
            Err(Failure::Other(match e {
                mysql_async::Error::Server(e) => ConnectError::Refused {
                    address,
                    reason: e.message,
                },
                other => ConnectError::Unreachable {
                    address,
                    // The driver wraps socket errors twice; show the socket's own words.
                    reason: match other {
                        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
                        other => other.to_string(),
                    },
                },
            }))
        }
    }
}

/// SQL for `'user'@'host'` of the session's account, as the privilege views
/// of `information_schema` name it. A user who may read the `mysql` schema
/// sees every account's rows in those views, so queries filter on this.
pub const GRANTEE: &str = "CONCAT('''', LEFT(CURRENT_USER(), LENGTH(CURRENT_USER()) - \
     LENGTH(SUBSTRING_INDEX(CURRENT_USER(), '@', -1)) - 1), '''@''', \
     SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')";

/// Quotes a database, table or column name for MySQL: `` `a``b` ``.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal for a statement (backslash and quote escaped, as the
/// server reads them without `NO_BACKSLASH_ESCAPES`): the one helper for
/// values that cannot be bound, such as a password in `CREATE USER` or
/// `CHANGE MASTER TO`.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `CHANGE MASTER TO` the primary at `host:port` by GTID (`slave_pos`),
/// reconnecting every second when it is lost: the one place this statement
/// is written (it holds the password: never logged).
pub fn change_master(
    host: &str,
    port: impl std::fmt::Display,
    user: &str,
    password: &Secret,
) -> String {
    change_master_ignoring(host, port, user, password, &[])
}

/// `change_master`, the events first written by the servers `ignore`
/// names skipped (a candidate catching up from a replica that holds
/// errant transactions of its own takes everything else it has). Every
/// other call clears the list, which would otherwise outlive the call.
pub fn change_master_ignoring(
    host: &str,
    port: impl std::fmt::Display,
    user: &str,
    password: &Secret,
    ignore: &[u64],
) -> String {
    let ids: Vec<String> = ignore.iter().map(|i| i.to_string()).collect();
    format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, \
         MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, \
         IGNORE_SERVER_IDS = ({})",
        quote_string(host),
        quote_string(user),
        quote_string(password.expose()),
        ids.join(", ")
    )
}

/// The MySQL error code of a server error, if it is one.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// One side of a job: a server, as whom, which database (and table), how
/// the cluster's own addresses map to reachable ones, and how connections
/// are secured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default)]
    pub host_mapping: HostMapping,
    /// How connections to this side are secured (a job stored before TLS
    /// existed reads as `preferred`).
    #[serde(default)]
    pub tls: TlsOptions,
    /// The minder's arbitrator (`host:port`) when this side is a minded
    /// Galera cluster: the job reads from a Synced node of the Primary
    /// component and moves when that node is drained, leaves it or dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minder: Option<String>,
}

impl Endpoint {
    /// `host:port`, as messages name a server.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Where and as whom to connect to this side.
    pub fn server_addr(&self) -> ServerAddr<'_> {
        ServerAddr {
            host: &self.host,
            port: self.port,
            user: &self.user,
            password: &self.password,
            tls: &self.tls,
        }
    }

    /// The scope on this side: `db` or `db.table`.
    pub fn scope(&self) -> String {
        match &self.table {
            Some(t) => format!("{}.{}", self.database, t),
            None => self.database.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("t"), "`t`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
