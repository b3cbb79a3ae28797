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
    /// The manager's own account (`control_user`, `control_password`):
    /// with it, `admin` is made without `READ_ONLY ADMIN`, so that
    /// `read_only` holds for the clients' account, and only this account
    /// turns a node writable.
    pub control: Option<(String, Secret)>,
    /// The CPU its `mariadbd` may use (`cpu_cores`, `cgroup_mode`).
    pub cgroup: Option<Cgroup>,
    /// A compute node: the Spider engine loaded (`spider`, "1").
    pub spider: bool,
}

/// How a cgroup limits an instance's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Hard: a CFS quota of `cpu_cores` CPUs.
    Quota,
    /// Soft: a weight in proportion to `cpu_cores`.
    Share,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Quota => "quota",
            CgroupMode::Share => "share",
        }
    }

    pub fn parse(text: &str) -> Result<CgroupMode, String> {
        match text {
            "" | "quota" => Ok(CgroupMode::Quota),
            "share" => Ok(CgroupMode::Share),
            other => Err(format!("cgroup_mode {other:?}: \"quota\" or \"share\"")),
        }
    }
}

/// An instance's CPU limit, kept by its agent across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub cpu_cores: u32,
    pub mode: CgroupMode,
}

impl Cgroup {
    /// `cpu_cores` and `cgroup_mode` of a request (none without
    /// `cpu_cores`, or with `cpu_cores` 0).
    pub fn parse(f: &Fields<'_>) -> Result<Option<Cgroup>, String> {
        let mode = CgroupMode::parse(&f.text("cgroup_mode")?.unwrap_or_default())?;
        Ok(f.int("cpu_cores", 0, 4096)?
            .filter(|c| *c > 0)
            .map(|c| Cgroup {
                cpu_cores: c as u32,
                mode,
            }))
    }

    fn put(c: &Option<Cgroup>, body: &mut Value) {
        if let Some(c) = c {
            body["cpu_cores"] = json!(c.cpu_cores);
            body["cgroup_mode"] = json!(c.mode.as_str());
        }
    }
}

/// Where a clone's data comes from: a node of the same shard, through its
/// agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneSource {
    pub host: String,
    pub agent_port: u16,
    pub port: u16,
    /// A replica: its backup runs with `--safe-slave-backup`.
    pub replica: bool,
}

/// `clone_mysql`: makes sure the instance on `port` holds a physical copy
/// of `source` streamed agent to agent, and replicates from `primary` by
/// GTID. A new instance is installed from `install` first; an installed
/// one keeps its old datadir until the new one replicates (then removes
/// it, or keeps it aside as `data.before-rebuild-<time>` when `keep_old`).
#[derive(Clone, Debug)]
pub struct CloneMysql {
    pub key: Key,
    pub port: u16,
    pub install: Option<InstallMysql>,
    pub source: CloneSource,
    pub primary: (String, u16),
    pub admin: (String, Secret),
    /// MB/s the stream may take (0: no limit).
    pub pv_limit_mb: u64,
    pub keep_old: bool,
}

impl CloneMysql {
    pub fn parse(f: &Fields<'_>) -> Result<CloneMysql, String> {
        let port = f.need_int("port", 1, 65535)? as u16;
        let install = match f.int("new", 0, 1)?.unwrap_or(0) {
            1 => Some(InstallMysql::parse(f)?),
            _ => None,
        };
        Ok(CloneMysql {
            key: Key::parse(f)?,
            port,
            install,
            source: CloneSource {
                host: f.need("src_host")?,
                agent_port: f.need_int("src_agent_port", 1, 65535)? as u16,
                port: f.need_int("src_port", 1, 65535)? as u16,
                replica: f.int("src_replica", 0, 1)?.unwrap_or(0) == 1,
            },
            primary: (
                f.need("primary_host")?,
                f.need_int("primary_port", 1, 65535)? as u16,
            ),
            admin: (
                f.need("admin_user")?,
                Secret::new(f.text("admin_password")?.unwrap_or_default()),
            ),
            pv_limit_mb: f.int("pv_limit", 0, 1 << 20)?.unwrap_or(0) as u64,
            keep_old: f.int("need_backup", 0, 1)?.unwrap_or(0) == 1,
        })
    }
}

/// `stream_backup`, agent to agent: the source's agent streams a physical
/// backup of its instance on `port` as the body of a `POST` to `to` (the
/// target agent's `/clone/SESSION`), and answers with what it sent.
#[derive(Clone, Debug)]
pub struct StreamBackup {
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub safe_slave: bool,
    pub pv_limit_mb: u64,
    pub to: String,
}

impl StreamBackup {
    pub fn parse(f: &Fields<'_>) -> Result<StreamBackup, String> {
        let to = f.need("to")?;
        if !to.starts_with("http://") || !to.contains("/clone/") {
            return Err(format!(
                "to {to:?}: an agent's http://HOST:PORT/clone/SESSION"
            ));
        }
        Ok(StreamBackup {
            port: f.need_int("port", 1, 65535)? as u16,
            user: f.need("user")?,
            password: Secret::new(f.text("password")?.unwrap_or_default()),
            safe_slave: f.int("safe_slave", 0, 1)?.unwrap_or(0) == 1,
            pv_limit_mb: f.int("pv_limit", 0, 1 << 20)?.unwrap_or(0) as u64,
            to,
        })
    }

    pub fn body(&self) -> Value {
        json!({"ver": VER, "job_type": "stream_backup", "port": self.port, "user": self.user,
               "password": self.password.expose(),
               "safe_slave": if self.safe_slave { "1" } else { "0" },
               "pv_limit": self.pv_limit_mb, "to": self.to})
    }
}

/// What a streamed backup carried, as each end counted it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub bytes: u64,
    /// SHA-256 of the whole stream, hex.
    pub sha256: String,
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
        let control = match (f.text("control_user")?, f.text("control_password")?) {
            (Some(u), Some(p)) if !u.is_empty() && admin.is_some() => Some((u, Secret::new(p))),
            (None, None) => None,
            _ => {
                return Err(
                    "control_user and control_password come together, with admin_user".into(),
                )
            }
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
            control,
            cgroup: Cgroup::parse(f)?,
            spider: f.int("spider", 0, 1)?.unwrap_or(0) == 1,
        })
    }

    fn put(&self, b: &mut Value) {
        b["port"] = json!(self.port);
        b["datadir"] = json!(self.datadir);
        b["server_id"] = json!(self.server_id);
        b["innodb_size"] = json!(self.innodb_size_mb);
        b["max_connections"] = json!(self.max_connections);
        b["read_only"] = json!(if self.read_only { "1" } else { "0" });
        b["semi_sync"] = json!(self.semi_sync.as_str());
        if let Some((user, password)) = &self.admin {
            b["admin_user"] = json!(user);
            b["admin_password"] = json!(password.expose());
        }
        if let Some((user, password)) = &self.control {
            b["control_user"] = json!(user);
            b["control_password"] = json!(password.expose());
        }
        Cgroup::put(&self.cgroup, b);
        if self.spider {
            b["spider"] = json!("1");
        }
        self.key.put(b);
    }
}

/// What the manager asks of an agent.
#[derive(Clone, Debug)]
pub enum Request {
    GetInfo,
    /// The agent's instances, each `running` or `stopped`.
    GetNode,
    /// Now, not keyed: the instance read-only and its clients'
    /// connections killed through its socket; killed when it does not
    /// answer there (it starts again read-only).
    FenceMysql {
        port: u16,
    },
    StopMysql {
        key: Key,
        port: u16,
    },
    InstallMysql(Box<InstallMysql>),
    UninstallMysql {
        key: Key,
        port: u16,
    },
    StartMysql {
        key: Key,
        port: u16,
    },
    CloneMysql(Box<CloneMysql>),
    /// Backups and restores through the backup storage.
    Storage(Box<StorageOp>),
    /// `update_instance_cgroup`: the instance's CPU limit (none: removed).
    SetCgroup {
        key: Key,
        port: u16,
        cgroup: Option<Cgroup>,
    },
}

impl Request {
    /// The body on the wire (it carries a password in clear: sent only to
    /// the agent, never logged).
    pub fn body(&self) -> Value {
        match self {
            Request::GetInfo => json!({"ver": VER, "job_type": "get_info"}),
            Request::GetNode => json!({"ver": VER, "job_type": "get_node"}),
            Request::FenceMysql { port } => {
                json!({"ver": VER, "job_type": "fence_mysql", "port": port})
            }
            Request::StopMysql { key, port } => {
                let mut b = json!({"ver": VER, "job_type": "stop_mysql", "port": port});
                key.put(&mut b);
                b
            }
            Request::InstallMysql(i) => {
                let mut b = json!({"ver": VER, "job_type": "install_mysql"});
                i.put(&mut b);
                b
            }
            Request::StartMysql { key, port } => {
                let mut b = json!({"ver": VER, "job_type": "start_mysql", "port": port});
                key.put(&mut b);
                b
            }
            Request::CloneMysql(c) => {
                let mut b = json!({"ver": VER, "job_type": "clone_mysql"});
                if let Some(i) = &c.install {
                    i.put(&mut b);
                    b["new"] = json!("1");
                }
                b["port"] = json!(c.port);
                b["src_host"] = json!(c.source.host);
                b["src_agent_port"] = json!(c.source.agent_port);
                b["src_port"] = json!(c.source.port);
                b["src_replica"] = json!(if c.source.replica { "1" } else { "0" });
                b["primary_host"] = json!(c.primary.0);
                b["primary_port"] = json!(c.primary.1);
                b["admin_user"] = json!(c.admin.0);
                b["admin_password"] = json!(c.admin.1.expose());
                b["pv_limit"] = json!(c.pv_limit_mb);
                b["need_backup"] = json!(if c.keep_old { "1" } else { "0" });
                c.key.put(&mut b);
                b
            }
            Request::SetCgroup { key, port, cgroup } => {
                let mut b = json!({"ver": VER, "job_type": "set_cgroup", "port": port,
                                   "cpu_cores": 0});
                Cgroup::put(cgroup, &mut b);
                key.put(&mut b);
                b
            }
            Request::UninstallMysql { key, port } => {
                let mut b = json!({"ver": VER, "job_type": "uninstall_mysql", "port": port});
                key.put(&mut b);
                b
            }
            Request::Storage(s) => s.body(),
        }
    }
}

/// An operation on the backup storage: a backup of an instance streamed
/// to it, a backup restored from it into an instance, or archived binlog
/// replayed into one. The account is the cluster's administrative one
/// (and the manager's own, `control`, which a restore sets again once the
/// replay ended).
#[derive(Clone, Debug)]
pub struct StorageOp {
    pub key: Key,
    pub port: u16,
    pub admin: (String, Secret),
    pub control: Option<(String, Secret)>,
    /// The cluster's `backup_encrypt_key`: every object sealed with it
    /// before it leaves the machine, opened with it on the way back.
    pub encrypt: Option<Secret>,
    pub work: StorageWork,
}

/// What a [`StorageOp`] does (`work` on the wire; the job type names it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum StorageWork {
    /// `backup_to_storage`: `mariadb-backup --stream` of the instance,
    /// gzip-compressed, as objects `PREFIXpart-NNNN.xb.gz` of at most
    /// `object_bytes` each, every one hashed.
    Backup {
        storage: String,
        prefix: String,
        safe_slave: bool,
        object_bytes: u64,
    },
    /// `restore_from_storage`: the backup's objects (each checked against
    /// its hash) into the instance's datadir, prepared, started read-only,
    /// its binlog starting at the backup's GTID position.
    Restore {
        storage: String,
        objects: Vec<crate::storage::Stored>,
        gtid: String,
    },
    /// `replay_binlog`: the archived segments (each checked against its
    /// hash), every transaction after the instance's own GTID position (at
    /// least `after`) and committed at or before `stop` (unix seconds)
    /// applied whole through `mariadb-binlog`; then the accounts set.
    Replay {
        storage: String,
        segments: Vec<crate::archive::SegmentMeta>,
        after: String,
        stop: Option<i64>,
        /// Only one table's row changes (`logical_restore`), applied to
        /// the same table in `into_database`, under the instance's own
        /// GTIDs; statements (DDL) are left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<TableReplay>,
    },
}

/// The table a replay is limited to, and the database it is applied in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReplay {
    pub database: String,
    pub table: String,
    pub into_database: String,
}

impl StorageWork {
    pub fn job_type(&self) -> &'static str {
        match self {
            StorageWork::Backup { .. } => "backup_to_storage",
            StorageWork::Restore { .. } => "restore_from_storage",
            StorageWork::Replay { .. } => "replay_binlog",
        }
    }
}

impl StorageOp {
    pub fn parse(f: &Fields<'_>, job_type: &str) -> Result<StorageOp, String> {
        let work: StorageWork = match f.value("work") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("work: {e}"))?,
            None => return Err("work: missing".into()),
        };
        if work.job_type() != job_type {
            return Err(format!(
                "work {:?} does not match job_type {job_type:?}",
                work.job_type()
            ));
        }
        let storage = match &work {
            StorageWork::Backup { storage, .. }
            | StorageWork::Restore { storage, .. }
            | StorageWork::Replay { storage, .. } => storage,
        };
        crate::storage::Location::parse(storage)?;
        let control = match (f.text("control_user")?, f.text("control_password")?) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, Secret::new(p))),
            _ => None,
        };
        Ok(StorageOp {
            key: Key::parse(f)?,
            port: f.need_int("port", 1, 65535)? as u16,
            admin: (
                f.need("admin_user")?,
                Secret::new(f.text("admin_password")?.unwrap_or_default()),
            ),
            control,
            encrypt: f
                .text("backup_encrypt_key")?
                .filter(|k| !k.is_empty())
                .map(Secret::new),
            work,
        })
    }

    fn body(&self) -> Value {
        let mut b = json!({"ver": VER, "job_type": self.work.job_type(), "port": self.port,
                           "admin_user": self.admin.0, "admin_password": self.admin.1.expose(),
                           "work": self.work});
        if let Some((u, p)) = &self.control {
            b["control_user"] = json!(u);
            b["control_password"] = json!(p.expose());
        }
        if let Some(k) = &self.encrypt {
            b["backup_encrypt_key"] = json!(k.expose());
        }
        self.key.put(&mut b);
        b
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
            control: Some(("ccr_control".into(), Secret::new("cpw".to_string()))),
            cgroup: Some(Cgroup {
                cpu_cores: 2,
                mode: CgroupMode::Share,
            }),
            spider: true,
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
        assert_eq!(back.cgroup, sent.cgroup);
        let clone = CloneMysql {
            key: sent.key.clone(),
            port: 46002,
            install: Some(sent.clone()),
            source: CloneSource {
                host: "127.0.0.12".into(),
                agent_port: 9998,
                port: 46001,
                replica: true,
            },
            primary: ("127.0.0.11".into(), 46000),
            admin: ("clustmgr".into(), Secret::new("pw".to_string())),
            pv_limit_mb: 10,
            keep_old: true,
        };
        let body = Request::CloneMysql(Box::new(clone.clone())).body();
        let back = CloneMysql::parse(&Fields::new(body.as_object().unwrap(), "")).unwrap();
        assert_eq!(
            (back.port, &back.source, &back.primary),
            (46002, &clone.source, &clone.primary)
        );
        assert_eq!((back.pv_limit_mb, back.keep_old), (10, true));
        assert_eq!(back.install.unwrap().port, 46002);
        let a: OpAnswer = OpAnswer::read(&json!({"ver": "0.1", "job_id": "7", "step": "s",
            "attempt": 1, "job_type": "install_mysql", "status": "ongoing", "error_code": "0",
            "error_info": "", "result": null}))
        .unwrap();
        assert_eq!((a.status, a.progress.done), (OpStatus::Ongoing, 0));
    }
}
