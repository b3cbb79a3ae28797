//! A source's replication topology as its nodes report it, and whether a
//! node can take over as the job's source after a failover.
//!
//! Addresses here are the cluster's own (often private): the caller passes
//! them through the side's host mapping before connecting.

use crate::position::MariaGtidPos;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use serde::{Deserialize, Serialize};

/// What a node reports of its neighbours: `host:port` each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Topology {
    /// The primary this node replicates from (`SHOW SLAVE STATUS`), if any.
    pub primary: Option<String>,
    /// The replicas registered with this node (`SHOW SLAVE HOSTS`).
    pub replicas: Vec<String>,
    /// Why part of it could not be read (e.g. a missing privilege).
    pub error: Option<String>,
}

impl Topology {
    /// Nodes that may take over, in the order to try them.
    pub fn candidates(&self) -> impl Iterator<Item = &String> {
        self.primary.iter().chain(&self.replicas)
    }
}

/// `host:port` → its parts; `None` when it is not one.
pub fn split(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Reads what `conn`'s node reports of its primary and replicas.
pub async fn discover(conn: &mut Conn) -> Topology {
    let mut topology = Topology::default();
    match conn.query::<Row, _>("SHOW SLAVE STATUS").await {
        Ok(rows) => {
            topology.primary = rows.into_iter().find_map(|row| {
                let host: String = row.get_opt("Master_Host")?.ok()?;
                let port: u16 = row.get_opt("Master_Port")?.ok()?;
                (!host.is_empty()).then(|| join(&host, port))
            })
        }
        Err(e) => topology.error = Some(format!("SHOW SLAVE STATUS: {e}")),
    }
    match conn.query::<Row, _>("SHOW SLAVE HOSTS").await {
        Ok(rows) => {
            topology.replicas = rows
                .into_iter()
                .filter_map(|row| {
                    let host: String = row.get_opt("Host")?.ok()?;
                    let port: u16 = row.get_opt("Port")?.ok()?;
                    (!host.is_empty() && port != 0).then(|| join(&host, port))
                })
                .collect();
            topology.replicas.sort();
        }
        Err(e) => {
            let e = format!("SHOW SLAVE HOSTS: {e}");
            topology.error = Some(match topology.error.take() {
                Some(first) => format!("{first}; {e}"),
                None => e,
            });
        }
    }
    topology
}

/// Whether the node behind `conn` can be the job's source now: a primary
/// (it replicates from nobody and takes writes) whose binlog holds every
/// transaction the job has applied (`applied`). The reason when not.
pub async fn can_take_over(conn: &mut Conn, applied: &MariaGtidPos) -> Result<(), String> {
    let replicating: Vec<Row> = conn
        .query("SHOW SLAVE STATUS")
        .await
        .map_err(|e| format!("SHOW SLAVE STATUS: {e}"))?;
    if !replicating.is_empty() {
        return Err("it still replicates from a primary (not promoted)".into());
    }
    let (read_only, binlog_pos): (u8, String) = conn
        .query_first("SELECT @@global.read_only, @@global.gtid_binlog_pos")
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if read_only != 0 {
        return Err("it is read_only (not promoted)".into());
    }
    let has = MariaGtidPos::parse(&binlog_pos).map_err(|e| e.to_string())?;
    let missing: Vec<String> = applied
        .iter()
        .filter(|g| !has.contains(g))
        .map(|g| g.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "its binlog ({binlog_pos}) lacks transactions the job has applied (up to {}): \
             following it would lose or fork history",
            missing.join(",")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_and_candidates_order() {
        assert_eq!(split("10.0.0.1:3306"), Some(("10.0.0.1", 3306)));
        assert_eq!(split("[fd00::1]:3307"), Some(("fd00::1", 3307)));
        assert_eq!(split("nohost"), None);
        assert_eq!(join("fd00::1", 3307), "[fd00::1]:3307");
        let t = Topology {
            primary: Some("p:1".into()),
            replicas: vec!["r1:2".into(), "r2:3".into()],
            error: None,
        };
        assert_eq!(
            t.candidates().cloned().collect::<Vec<_>>(),
            ["p:1", "r1:2", "r2:3"]
        );
    }
}
