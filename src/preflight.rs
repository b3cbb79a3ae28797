//! The checks `create_ccr` runs against both servers before a job is stored.
//!
//! Source: reachable; a supported server (MariaDB 10.6+: a MySQL source is
//! refused, since the snapshot, GTID positions and failover are MariaDB's
//! and no MySQL server has been tested against); binary
//! log on, `binlog_format=ROW`, `binlog_row_image=FULL` (global values: they
//! are what writers' sessions start with); the user holds REPLICATION SLAVE,
//! REPLICATION CLIENT (MariaDB: BINLOG MONITOR) and SELECT on the scope (and
//! SHOW VIEW when a database job's scope has views); the database, or table,
//! exists. Destination: reachable; the user may create and
//! write the destination database (and create views, if the source has
//! some); the target tables are absent unless
//! `allow_table_exists`; it is not the source database itself.
//!
//! Every problem on a server is collected and reported together, each with
//! what to change, so an operator fixes them in one round. Read-only: nothing
//! here writes to either server.

use crate::db::{self, ConnectError, GRANTEE};
use crate::job::spec::{Endpoint, JobSpec};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{side} {error}")]
    Unreachable { side: Side, error: ConnectError },
    #[error("{side} {error}")]
    Refused { side: Side, error: ConnectError },
    #[error("{side} {address} {}", problems.join("; "))]
    Unfit {
        side: Side,
        address: String,
        problems: Vec<String>,
    },
    #[error("destination {address} already has {}; drop {} or set allow_table_exists to reuse {}",
        tables.join(", "), them(tables), them(tables))]
    TargetExists {
        address: String,
        tables: Vec<String>,
    },
    #[error("{side} {address} failed a check query: {reason}")]
    Query {
        side: Side,
        address: String,
        reason: String,
    },
}

fn them(tables: &[String]) -> &'static str {
    if tables.len() == 1 {
        "it"
    } else {
        "them"
    }
}

/// What the source check learned that the destination check needs.
struct SourceFacts {
    /// The tables in the job's scope.
    tables: Vec<String>,
    /// The views in a database job's scope (copied after the tables).
    views: Vec<String>,
    identity: ServerIdentity,
}

/// Tells two servers apart even when reached by different addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerIdentity {
    hostname: String,
    port: i64,
    datadir: String,
}

/// Runs every check; `Ok` means the job may be stored.
pub async fn check(spec: &JobSpec, timeout: Duration) -> Result<(), PreflightError> {
    let (src, dest) = tokio::join!(
        connect(Side::Source, &spec.src, timeout),
        connect(Side::Destination, &spec.dest, timeout)
    );
    let mut src = src?;
    let mut dest = dest?;
    let result = async {
        let facts = check_source(&mut src, &spec.src).await?;
        check_destination(&mut dest, spec, &facts).await
    }
    .await;
    // Best effort: the checks' outcome does not depend on a clean goodbye.
    let _ = tokio::join!(src.disconnect(), dest.disconnect());
    result
}

async fn connect(side: Side, ep: &Endpoint, timeout: Duration) -> Result<Conn, PreflightError> {
    db::connect(&ep.server_addr(), None, timeout)
        .await
        .map_err(|error| match error {
            ConnectError::Unreachable { .. } => PreflightError::Unreachable { side, error },
            ConnectError::Refused { .. } => PreflightError::Refused { side, error },
        })
}

/// A minded source (`src.minder`): a Galera node writing the cluster's
/// GTIDs into its binlog, known to an arbitrator that answers.
async fn minded_problems(
    conn: &mut Conn,
    ep: &Endpoint,
    arbitrator: &str,
) -> Result<Vec<String>, mysql_async::Error> {
    let mut problems = Vec::new();
    let (wsrep_on, gtid_mode, slave_updates): (i64, i64, i64) = conn
        .query_first(
            "SELECT @@global.wsrep_on, @@global.wsrep_gtid_mode, @@global.log_slave_updates",
        )
        .await?
        .unwrap_or_default();
    if wsrep_on == 0 {
        problems.push("is not a Galera node (wsrep_on=OFF), but src.minder is set".to_string());
    } else {
        if gtid_mode == 0 {
            problems.push(
                "has wsrep_gtid_mode=OFF; a minded source needs wsrep_gtid_mode=ON (the same \
                 wsrep_gtid_domain_id on every node) so that every node writes the same GTIDs"
                    .to_string(),
            );
        }
        if slave_updates == 0 {
            problems.push(
                "has log_slave_updates=OFF; a minded source needs it ON so that every node's \
                 binlog holds every write of the cluster"
                    .to_string(),
            );
        }
    }
    match crate::minder::status_summary(arbitrator).await {
        Ok(summary) => {
            let known: Vec<String> = summary["nodes"]
                .as_object()
                .map(|nodes| {
                    nodes
                        .iter()
                        .map(|(n, v)| format!("{n} at {}", v["mysql"].as_str().unwrap_or("?")))
                        .collect()
                })
                .unwrap_or_default();
            let address = ep.address();
            if !known.iter().any(|k| k.ends_with(&format!(" at {address}"))) {
                problems.push(format!(
                    "is not a node the minder's arbitrator at {arbitrator} knows (it knows {}); \
                     give the source as its [[dbserver]] mysql address",
                    known.join(", ")
                ));
            }
        }
        Err(e) => problems.push(format!(
            "is minded by an arbitrator that does not answer at src.minder {arbitrator}: {e}"
        )),
    }
    Ok(problems)
}

fn query_error(side: Side, ep: &Endpoint) -> impl Fn(mysql_async::Error) -> PreflightError + '_ {
    move |e| PreflightError::Query {
        side,
        address: ep.address(),
        reason: e.to_string(),
    }
}

async fn check_source(conn: &mut Conn, ep: &Endpoint) -> Result<SourceFacts, PreflightError> {
    let err = query_error(Side::Source, ep);
    let mut problems = server_problems(conn, ep).await.map_err(&err)?;
    let global = global_privileges(conn).await.map_err(&err)?;
    problems.extend(
        source_privilege_problems(conn, ep, &global)
            .await
            .map_err(&err)?,
    );
    let exists = schema_exists(conn, &ep.database).await.map_err(&err)?;
    let views = if exists && ep.table.is_none() {
        views(conn, &ep.database).await.map_err(&err)?
    } else {
        Vec::new()
    };
    if !views.is_empty()
        && !global.contains("SHOW VIEW")
        && !schema_privileges(conn, &ep.database)
            .await
            .map_err(&err)?
            .contains("SHOW VIEW")
    {
        problems.push(format!(
            "user {:?} lacks SHOW VIEW, needed to copy the views of {} ({}); GRANT SHOW VIEW ON {}.* TO the user",
            ep.user,
            ep.database,
            views.join(", "),
            db::quote_ident(&ep.database),
        ));
    }
    let tables = if exists {
        let all = base_tables(conn, &ep.database).await.map_err(&err)?;
        let tables = match &ep.table {
            Some(t) if all.contains(t) => vec![t.clone()],
            Some(t) => {
                problems.push(format!(
                    "has no table {}.{} (or the user cannot see it); create it or fix src.table",
                    ep.database, t
                ));
                Vec::new()
            }
            None => all,
        };
        // Not copied yet, and never silently left out.
        problems.extend(versioned_problems(conn, ep).await.map_err(&err)?);
        tables
    } else {
        problems.push(format!(
            "has no database {} (or the user cannot see it); create it or fix src.database",
            ep.database
        ));
        Vec::new()
    };
    if !problems.is_empty() {
        return Err(PreflightError::Unfit {
            side: Side::Source,
            address: ep.address(),
            problems,
        });
    }
    Ok(SourceFacts {
        tables,
        views,
        identity: identity(conn).await.map_err(&err)?,
    })
}

/// What keeps the source server from serving a job: its version, its
/// binary log's settings, and (for a minded source) its cluster's.
async fn server_problems(
    conn: &mut Conn,
    ep: &Endpoint,
) -> Result<Vec<String>, mysql_async::Error> {
    let (version, log_bin, format, row_image): (String, i64, String, String) = conn
        .query_first(
            "SELECT @@version, @@log_bin, @@global.binlog_format, @@global.binlog_row_image",
        )
        .await?
        .ok_or_else(|| mysql_async::Error::Other("no row".into()))?;
    let mut problems = Vec::new();
    if let Some(p) = version_problem(&version) {
        problems.push(p);
    }
    if log_bin == 0 {
        problems.push(
            "has the binary log off; start it with log_bin (e.g. --log-bin) and server_id set"
                .into(),
        );
    }
    if !format.eq_ignore_ascii_case("ROW") {
        problems.push(format!("has binlog_format={format}; set binlog_format=ROW"));
    }
    if !row_image.eq_ignore_ascii_case("FULL") {
        problems.push(format!(
            "has binlog_row_image={row_image}; set binlog_row_image=FULL"
        ));
    }
    if let Some(arbitrator) = &ep.minder {
        problems.extend(minded_problems(conn, ep, arbitrator).await?);
    }
    Ok(problems)
}

/// The privileges the source user lacks to read the binlog and the tables.
async fn source_privilege_problems(
    conn: &mut Conn,
    ep: &Endpoint,
    global: &BTreeSet<String>,
) -> Result<Vec<String>, mysql_async::Error> {
    let mut missing = Vec::new();
    if !global.contains("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !global.contains("REPLICATION CLIENT") && !global.contains("BINLOG MONITOR") {
        missing.push("REPLICATION CLIENT");
    }
    let mut can_select = global.contains("SELECT")
        || schema_privileges(conn, &ep.database)
            .await?
            .contains("SELECT");
    if !can_select {
        if let Some(table) = &ep.table {
            can_select = table_privileges(conn, &ep.database, table)
                .await?
                .contains("SELECT");
        }
    }
    if !can_select {
        missing.push("SELECT");
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "user {:?} lacks {}; GRANT {} ON *.* TO the user (SELECT may be granted on {} only)",
        ep.user,
        missing.join(", "),
        missing.join(", "),
        db::quote_ident(&ep.database),
    )])
}

/// Tables in the job's scope versioned by transaction id: not replicated
/// yet. (Versioned by time, implicit or named periods, they replicate.)
async fn versioned_problems(
    conn: &mut Conn,
    ep: &Endpoint,
) -> Result<Vec<String>, mysql_async::Error> {
    let versioned: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
             AND TABLE_TYPE = 'SYSTEM VERSIONED' AND (? IS NULL OR TABLE_NAME = ?) \
             ORDER BY TABLE_NAME",
            (&ep.database, &ep.table, &ep.table),
        )
        .await?;
    let mut explicit = Vec::new();
    for t in versioned {
        let create: Option<(String, String)> = conn
            .query_first(format!(
                "SHOW CREATE TABLE {}.{}",
                db::quote_ident(&ep.database),
                db::quote_ident(&t)
            ))
            .await?;
        let by_transaction = create.is_some_and(|(_, sql)| {
            sql.lines()
                .any(|l| l.contains("AS ROW START") && l.to_ascii_lowercase().contains("bigint"))
        });
        if by_transaction {
            explicit.push(t);
        }
    }
    if explicit.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "has tables versioned by transaction id in the job's scope ({}), which this \
         version does not replicate yet (their history would be lost); version them by \
         time (TIMESTAMP periods, or WITH SYSTEM VERSIONING alone), or move them to \
         another database",
        explicit.join(", ")
    )])
}

/// What the destination user must be able to do in the destination database.
const DEST_PRIVILEGES: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX",
];

async fn check_destination(
    conn: &mut Conn,
    spec: &JobSpec,
    src: &SourceFacts,
) -> Result<(), PreflightError> {
    let ep = &spec.dest;
    let err = query_error(Side::Destination, ep);
    let mut problems = Vec::new();
    if identity(conn).await.map_err(&err)? == src.identity && spec.src.database == ep.database {
        problems.push(format!(
            "is the source server, and database {} is the source database; choose another dest.database",
            ep.database
        ));
    }
    let global = global_privileges(conn).await.map_err(&err)?;
    // A read-only server (a replica, a demoted primary) refuses the job's
    // writes, unless the user may write through read_only.
    let read_only: Option<i64> = conn.query_first("SELECT @@read_only").await.map_err(&err)?;
    if read_only == Some(1) && !global.contains("READ_ONLY ADMIN") && !global.contains("SUPER") {
        problems.push(format!(
            "is read-only (read_only=ON) and user {:?} cannot write through it; point dest at \
             the primary (of a managed shard: the node get_cluster_detail shows as master)",
            ep.user
        ));
    }
    let schema = schema_privileges(conn, &ep.database).await.map_err(&err)?;
    let views_needed = (!src.views.is_empty()).then_some("CREATE VIEW");
    let missing: Vec<&str> = DEST_PRIVILEGES
        .into_iter()
        .chain(views_needed)
        .filter(|p| !global.contains(*p) && !schema.contains(*p))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "user {:?} lacks {} on {}; GRANT them ON {}.* TO the user",
            ep.user,
            missing.join(", "),
            db::quote_ident(&ep.database),
            db::quote_ident(&ep.database),
        ));
    }
    if !problems.is_empty() {
        return Err(PreflightError::Unfit {
            side: Side::Destination,
            address: ep.address(),
            problems,
        });
    }

    if spec.allow_table_exists || !schema_exists(conn, &ep.database).await.map_err(&err)? {
        return Ok(());
    }
    let present = all_tables(conn, &ep.database).await.map_err(&err)?;
    let wanted: Vec<String> = match &ep.table {
        Some(t) => vec![t.clone()],
        None => src.tables.clone(),
    };
    let clash: Vec<String> = wanted
        .into_iter()
        .filter(|t| present.contains(t))
        .map(|t| format!("{}.{}", ep.database, t))
        .collect();
    if clash.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::TargetExists {
            address: ep.address(),
            tables: clash,
        })
    }
}

/// A source's version: "10.11.6-MariaDB-log" is MariaDB 10.11; one
/// without "MariaDB" is MySQL, refused for now.
fn version_problem(version: &str) -> Option<String> {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if !version.contains("MariaDB") {
        return Some(format!(
            "runs MySQL {version}: MySQL sources are not supported yet (the consistent \
             snapshot, GTID positions and failover are built and tested for MariaDB \
             only); use a MariaDB 10.6+ source"
        ));
    }
    if (major, minor) < (10, 6) {
        Some(format!(
            "runs MariaDB {version}, older than the MariaDB 10.6 this syncer needs; upgrade it"
        ))
    } else {
        None
    }
}

async fn global_privileges(conn: &mut Conn) -> Result<BTreeSet<String>, mysql_async::Error> {
    let rows: Vec<String> = conn
        .query(format!(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {GRANTEE}"
        ))
        .await?;
    Ok(rows.into_iter().collect())
}

/// Database-level grants whose pattern covers `database`.
async fn schema_privileges(
    conn: &mut Conn,
    database: &str,
) -> Result<BTreeSet<String>, mysql_async::Error> {
    let rows: Vec<String> = conn
        .exec(
            format!(
                "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE ? LIKE TABLE_SCHEMA AND GRANTEE = {GRANTEE}"
            ),
            (database,),
        )
        .await?;
    Ok(rows.into_iter().collect())
}

async fn table_privileges(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<BTreeSet<String>, mysql_async::Error> {
    let rows: Vec<String> = conn
        .exec(
            format!(
                "SELECT PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND GRANTEE = {GRANTEE}"
            ),
            (database, table),
        )
        .await?;
    Ok(rows.into_iter().collect())
}

async fn schema_exists(conn: &mut Conn, database: &str) -> Result<bool, mysql_async::Error> {
    let found: Option<String> = conn
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .await?;
    Ok(found.is_some())
}

async fn base_tables(conn: &mut Conn, database: &str) -> Result<Vec<String>, mysql_async::Error> {
    conn.exec(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (database,),
    )
    .await
}

async fn views(conn: &mut Conn, database: &str) -> Result<Vec<String>, mysql_async::Error> {
    conn.exec(
        "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
        (database,),
    )
    .await
}

/// Tables and views: a view in the way blocks a table of its name too.
async fn all_tables(
    conn: &mut Conn,
    database: &str,
) -> Result<BTreeSet<String>, mysql_async::Error> {
    let rows: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (database,),
        )
        .await?;
    Ok(rows.into_iter().collect())
}

async fn identity(conn: &mut Conn) -> Result<ServerIdentity, mysql_async::Error> {
    let (hostname, port, datadir): (String, i64, String) = conn
        .query_first("SELECT @@hostname, @@port, @@datadir")
        .await?
        .ok_or_else(|| mysql_async::Error::Other("no row".into()))?;
    Ok(ServerIdentity {
        hostname,
        port,
        datadir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let cases = [
            ("10.11.19-MariaDB-0+deb12u1", false),
            ("10.6.0-MariaDB", false),
            ("10.5.23-MariaDB-log", true),
            ("11.4.2-MariaDB", false),
            ("8.0.36", true),
            ("5.7.44-log", true),
        ];
        for (v, too_old) in cases {
            assert_eq!(version_problem(v).is_some(), too_old, "{v}");
        }
    }

    #[test]
    fn messages_name_what_to_fix() {
        let e = PreflightError::Unfit {
            side: Side::Source,
            address: "127.0.0.1:13306".into(),
            problems: vec!["has binlog_format=STATEMENT; set binlog_format=ROW".into()],
        };
        assert_eq!(
            e.to_string(),
            "source 127.0.0.1:13306 has binlog_format=STATEMENT; set binlog_format=ROW"
        );
        let e = PreflightError::TargetExists {
            address: "h:1".into(),
            tables: vec!["d.t".into()],
        };
        assert_eq!(
            e.to_string(),
            "destination h:1 already has d.t; drop it or set allow_table_exists to reuse it"
        );
    }
}
