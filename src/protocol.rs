//! The node agent's protocol (below both sides): every request the cluster manager sends and
//! every answer the agent gives, as types both sides compile. The wire
//! keeps seed 000's field names (`ver`, `job_type`, `port`, `datadir`, …,
//! numbers accepted as strings too); the manager builds a request with
//! [`Request::body`] and reads an answer with [`OpAnswer::read`], the agent
//! reads a request with the `parse` functions here and writes answers from
//! the same types, so a field renamed on one side breaks the build, not a
//! cluster.

use crate::fields::Fields;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The protocol version both sides send.
pub const VER: &str = "0.1";

/// A long operation's key: the same key sent again answers that
/// operation's state instead of starting a second one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub job_id: String,
    pub step: String,
    pub attempt: u64,
}

impl Key {
    pub fn parse(f: &Fields<'_>) -> Result<Key, String> {
        Ok(Key {
            job_id: f.need("job_id")?,
            step: f.text("step")?.unwrap_or_default(),
            attempt: f.int("attempt", 0, i64::MAX)?.unwrap_or(0) as u64,
        })
    }

    fn put(&self, body: &mut Value) {
        body["job_id"] = json!(self.job_id);
        body["step"] = json!(self.step);
        body["attempt"] = json!(self.attempt);
    }
}

/// MariaDB semi-synchronous replication of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SemiSync {
    #[default]
    None,
    Master,
    Slave,
}

impl SemiSync {
    /// As `my.cnf` and the wire spell it (`""` for none).
    pub fn as_str(self) -> &'static str {
        match self {
            SemiSync::None => "",
            SemiSync::Master => "master",
            SemiSync::Slave => "slave",
        }
    }
}

/// `install_mysql`: a managed instance, installed, started, with the
/// cluster's administrative account.
#[derive(Clone, Debug)]
pub struct InstallMysql {
    pub key: Key,
    pub port: u16,
    /// The machine's data directory; the instance lives in `DATADIR/PORT`.
    pub datadir: PathBuf,
    pub server_id: u64,
    pub innodb_size_mb: u64,
    pub max_connections: u64,
    pub read_only: bool,
    pub semi_sync: SemiSync,
    pub admin: Option<(String, Secret)>,
}

impl InstallMysql {
    pub fn parse(f: &Fields<'_>) -> Result<InstallMysql, String> {
        let datadir = PathBuf::from(f.need("datadir")?);
        if !datadir.is_absolute() || datadir.components().any(|c| c.as_os_str() == "..") {
            return Err(format!(
                "datadir {:?} must be an absolute path without ..",
                datadir.display()
            ));
        }
        let admin = match (f.text("admin_user")?, f.text("admin_password")?) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, Secret::new(p))),
            (None, None) => None,
            _ => return Err("admin_user and admin_password come together".into()),
        };
        Ok(InstallMysql {
            key: Key::parse(f)?,
            port: f.need_int("port", 1, 65535)? as u16,
            datadir,
            innodb_size_mb: f.int("innodb_size", 16, 1 << 20)?.unwrap_or(128) as u64,
            max_connections: f.int("max_connections", 10, 100_000)?.unwrap_or(1000) as u64,
            server_id: f.need_int("server_id", 1, u32::MAX as i64)? as u64,
            read_only: f.int("read_only", 0, 1)?.unwrap_or(0) == 1,
            semi_sync: match f.text("semi_sync")?.unwrap_or_default().as_str() {
                "" => SemiSync::None,
                "master" => SemiSync::Master,
                "slave" => SemiSync::Slave,
                other => {
                    return Err(format!(
                        "semi_sync {other:?}: \"master\", \"slave\" or none"
                    ))
                }
            },
            admin,
        })
    }
}

/// What the manager asks of an agent.
#[derive(Clone, Debug)]
pub enum Request {
    GetInfo,
    InstallMysql(Box<InstallMysql>),
    UninstallMysql { key: Key, port: u16 },
}

impl Request {
    /// The body on the wire (it carries a password in clear: sent only to
    /// the agent, never logged).
    pub fn body(&self) -> Value {
        match self {
            Request::GetInfo => json!({"ver": VER, "job_type": "get_info"}),
            Request::InstallMysql(i) => {
                let mut b = json!({"ver": VER, "job_type": "install_mysql", "port": i.port,
                    "datadir": i.datadir, "server_id": i.server_id,
                    "innodb_size": i.innodb_size_mb, "max_connections": i.max_connections,
                    "read_only": if i.read_only { "1" } else { "0" },
                    "semi_sync": i.semi_sync.as_str()});
                if let Some((user, password)) = &i.admin {
                    b["admin_user"] = json!(user);
                    b["admin_password"] = json!(password.expose());
                }
                i.key.put(&mut b);
                b
            }
            Request::UninstallMysql { key, port } => {
                let mut b = json!({"ver": VER, "job_type": "uninstall_mysql", "port": port});
                key.put(&mut b);
                b
            }
        }
    }
}

/// A long operation's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpStatus {
    Ongoing,
    Done,
    Failed,
    /// The agent stopped while it ran: send it again with the next attempt.
    Interrupted,
}

/// How far a long operation got: bytes (or other units) done, and the
/// total when known. An operation whose progress does not move for the
/// manager's `stall_s` is failed by the manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: Option<u64>,
    /// What it is doing now (`installing`, `starting`, `copying` …).
    #[serde(default)]
    pub phase: String,
}

/// The answer about a keyed operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpAnswer {
    pub ver: String,
    pub job_id: String,
    pub step: String,
    pub attempt: u64,
    pub job_type: String,
    pub status: OpStatus,
    pub error_code: String,
    pub error_info: String,
    pub result: Value,
    #[serde(default)]
    pub progress: Progress,
}

impl OpAnswer {
    pub fn read(v: &Value) -> Result<OpAnswer, String> {
        serde_json::from_value(v.clone())
            .map_err(|e| format!("an answer this manager cannot read ({e}): {v}"))
    }
}

/// `get_info`'s answer (the fields the manager reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub cores: u64,
    #[serde(default)]
    pub total_mem_mb: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_goes_through_the_wire_and_back() {
        let sent = InstallMysql {
            key: Key {
                job_id: "7".into(),
                step: "install:1:2".into(),
                attempt: 3,
            },
            port: 46001,
            datadir: "/data".into(),
            server_id: 1012,
            innodb_size_mb: 32,
            max_connections: 60,
            read_only: true,
            semi_sync: SemiSync::Slave,
            admin: Some(("clustmgr".into(), Secret::new("pw".to_string()))),
        };
        let body = Request::InstallMysql(Box::new(sent.clone())).body();
        assert_eq!(body["job_type"], "install_mysql");
        let map = body.as_object().unwrap();
        let back = InstallMysql::parse(&Fields::new(map, "")).unwrap();
        assert_eq!(back.key, sent.key);
        assert_eq!(
            (back.port, back.server_id, back.read_only, back.semi_sync),
            (46001, 1012, true, SemiSync::Slave)
        );
        assert_eq!(back.admin.unwrap().1.expose(), "pw");
        let a: OpAnswer = OpAnswer::read(&json!({"ver": "0.1", "job_id": "7", "step": "s",
            "attempt": 1, "job_type": "install_mysql", "status": "ongoing", "error_code": "0",
            "error_info": "", "result": null}))
        .unwrap();
        assert_eq!((a.status, a.progress.done), (OpStatus::Ongoing, 0));
    }
}
