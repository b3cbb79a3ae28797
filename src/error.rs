//! The one error taxonomy of everything that talks to a server.
//!
//! Every failure a module reports falls in one [`Kind`], and each kind has a
//! stable machine-readable code (`Kind::code`) that the API shows beside the
//! message (`last_error_code`):
//!
//! - **transient** (`transient`): worth retrying as it is — a lost
//!   connection, a deadlock, a server restarting;
//! - **definite** (`definite`): needs an operator; the message says what to fix;
//! - **refused** (`refused`): the destination refused one source transaction
//!   (a duplicate key, a missing row …); the job holds on it;
//! - **purged** (`purged`): the source no longer has the binlog at the position asked;
//! - **fenced** (`fenced`): a member holding a newer lease of the job claimed
//!   the destination; this one must stop.
//!
//! A server's error is classified here and nowhere else ([`kind_of`]).

use serde::{Deserialize, Serialize};

/// What a failure means for the one who meets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Transient,
    Definite,
    Refused,
    Purged,
    Fenced,
}

impl Kind {
    /// The stable code: part of the API, never renamed.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Transient => "transient",
            Kind::Definite => "definite",
            Kind::Refused => "refused",
            Kind::Purged => "purged",
            Kind::Fenced => "fenced",
        }
    }
}

/// The destination checkpoint's lease epoch column, whose guard refuses a
/// stale holder's upsert by setting it to NULL (ER_BAD_NULL naming it).
pub const EPOCH_COLUMN: &str = "owner_epoch";
const ER_BAD_NULL: u16 = 1048;

/// Whether a destination error is the fence refusing a stale holder.
pub fn is_fenced(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == ER_BAD_NULL && s.message.contains(EPOCH_COLUMN))
}

/// Errors a retry can cure: the connection, the server's availability, or
/// lock conflicts — not what the server says about the data or the schema.
pub fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // Too many connections, shutdown in progress, lock wait timeout,
        // deadlock, query interrupted, table definition changed (the snapshot
        // predates a DDL), connection killed, net read/write errors.
        // A Galera node outside the Primary component ("WSREP has not yet
        // prepared node for application use": 1047 with SQLSTATE 08S01)
        // serves again once it is back in one.
        mysql_async::Error::Server(s) if s.code == 1047 && s.state == "08S01" => true,
        // A read-only server (1290 naming --read-only): a primary demoted by
        // a failover or a switchover, until the job follows the new one.
        mysql_async::Error::Server(s) if s.code == 1290 && s.message.contains("read-only") => true,
        mysql_async::Error::Server(s) => matches!(
            s.code,
            1040 | 1053
                | 1158
                | 1159
                | 1160
                | 1161
                | 1205
                | 1213
                | 1317
                | 1412
                | 1927
                | 2006
                | 2013
        ),
        _ => false,
    }
}

/// The kind of a server's error: fenced, transient or definite.
pub fn kind_of(e: &mysql_async::Error) -> Kind {
    if is_fenced(e) {
        Kind::Fenced
    } else if is_transient(e) {
        Kind::Transient
    } else {
        Kind::Definite
    }
}

/// A source transaction the destination refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedTransaction {
    /// The commit seq of the position just after it (see doc/operations.md).
    pub commit_seq: Option<u64>,
    /// Its GTID (`domain-server-seq`), where the source logs GTIDs.
    pub gtid: Option<String>,
    /// Where it starts in the source's binlog (`file:pos`).
    pub binlog_position: String,
    /// The statement the destination refused (long values elided), if any.
    pub statement: Option<String>,
    /// What the destination said.
    pub error: String,
}

/// Why a sync (full, incremental, verification) attempt stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Definite(String),
    #[error("{0}")]
    Purged(String),
    #[error("{message}")]
    Refused {
        txn: Box<FailedTransaction>,
        message: String,
    },
    #[error("{0}")]
    Fenced(String),
}

impl SyncError {
    /// A server's error met while doing `context`, classified.
    pub fn sql(context: impl std::fmt::Display, e: mysql_async::Error) -> Self {
        match kind_of(&e) {
            Kind::Fenced => SyncError::Fenced(format!(
                "{context}: refused, a member holding a newer lease of the job has claimed the destination"
            )),
            Kind::Transient => SyncError::Transient(format!("{context}: {e}")),
            _ => SyncError::Definite(format!("{context}: {e}")),
        }
    }

    /// A failed connection to `side`: unreachable is transient, refused definite.
    pub fn connect(side: &str, e: crate::db::ConnectError) -> Self {
        match e.kind() {
            Kind::Transient => SyncError::Transient(format!("{side} {e}")),
            _ => SyncError::Definite(format!("{side} {e}")),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            SyncError::Transient(_) => Kind::Transient,
            SyncError::Definite(_) => Kind::Definite,
            SyncError::Purged(_) => Kind::Purged,
            SyncError::Refused { .. } => Kind::Refused,
            SyncError::Fenced(_) => Kind::Fenced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let all = [
            Kind::Transient,
            Kind::Definite,
            Kind::Refused,
            Kind::Purged,
            Kind::Fenced,
        ];
        let codes: Vec<_> = all.iter().map(|k| k.code()).collect();
        assert_eq!(
            codes,
            ["transient", "definite", "refused", "purged", "fenced"]
        );
    }

    #[test]
    fn server_errors_are_classified_once() {
        let server = |code: u16, message: &str| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: message.into(),
                state: "HY000".into(),
            })
        };
        assert_eq!(kind_of(&server(1213, "Deadlock")), Kind::Transient);
        assert_eq!(kind_of(&server(1062, "Duplicate entry")), Kind::Definite);
        assert_eq!(
            kind_of(&server(1048, "Column 'owner_epoch' cannot be null")),
            Kind::Fenced
        );
        assert_eq!(
            kind_of(&server(1048, "Column 'x' cannot be null")),
            Kind::Definite
        );
        let ro = "The MariaDB server is running with the --read-only option so it cannot execute this statement";
        assert_eq!(kind_of(&server(1290, ro)), Kind::Transient);
        let other = "The MariaDB server is running with the --secure-file-priv option so it cannot execute this statement";
        assert_eq!(kind_of(&server(1290, other)), Kind::Definite);
    }
}
