//! How the service talks to MySQL-protocol servers: connection options with a
//! timeout, errors sorted into "unreachable" and "refused", identifier quoting.
//!
//! Every connection goes over TCP to the address given (never a local socket
//! the driver might prefer), so what is tested is what runs across networks.

use crate::secret::Secret;
use mysql_async::{Conn, Opts, OptsBuilder};
use std::time::Duration;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ServerAddr<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a Secret,
}

pub fn opts(addr: &ServerAddr<'_>, database: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(addr.host)
        .tcp_port(addr.port)
        .user(Some(addr.user))
        .pass(Some(addr.password.expose()))
        .db_name(database)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .into()
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
    match tokio::time::timeout(timeout, Conn::new(opts)).await {
        Err(_) => Err(ConnectError::Unreachable {
            address,
            reason: format!("no answer within {} s", timeout.as_secs_f64()),
        }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(mysql_async::Error::Server(e))) => Err(ConnectError::Refused {
            address,
            reason: e.message,
        }),
        Ok(Err(e)) => Err(ConnectError::Unreachable {
            address,
            // The driver wraps socket errors twice; show the socket's own words.
            reason: match e {
                mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
                other => other.to_string(),
            },
        }),
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

/// The MySQL error code of a server error, if it is one.
pub fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
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
