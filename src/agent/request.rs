//! The agent's requests (seed 000), read into typed operations. A number
//! may come as a JSON number or a string; a missing or wrongly typed field,
//! a value out of range or a job type outside the list is refused saying
//! which, and nothing runs.

use super::instance::{InstallSpec, Instance};
use crate::db::{self, Endpoint, ServerAddr};
use crate::protocol::{Cgroup, CloneMysql, InstallMysql, Key, StreamBackup};
use crate::secret::Secret;
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Why a request is refused.
#[derive(Debug)]
pub struct Refusal(pub String);

/// The job types this agent takes.
pub const ACCEPTED: &str = "get_info, get_node, update_node, get_status, auto_pullup, mysql_cmd \
(./startmysql.sh PORT or ./stopmysql.sh PORT), delete (file_type table or binlog), send \
(file_type table), coldbackup, coldrestore, install_mysql, start_mysql, stop_mysql, \
uninstall_mysql, clone_mysql, stream_backup (agent to agent), set_cgroup, fence_mysql, backup_to_storage, restore_from_storage, replay_binlog";

pub enum Request {
    GetInfo,
    GetNode,
    UpdateNode,
    GetStatus {
        job_id: String,
    },
    AutoPullup {
        minutes: i64,
        port: Option<u16>,
    },
    /// Agent to agent: a backup streamed to another agent's `/clone/…`.
    StreamBackup(StreamBackup),
    /// The manager fencing an old primary: now, not keyed, never waiting
    /// for the instance's lock.
    Fence {
        port: u16,
    },
    Operation {
        key: Key,
        job_type: &'static str,
        op: Op,
    },
}

pub enum Op {
    Install {
        spec: InstallSpec,
        admin: Option<(String, Secret)>,
        control: Option<(String, Secret)>,
    },
    Start {
        port: u16,
    },
    Stop {
        port: u16,
    },
    Uninstall {
        port: u16,
    },
    Delete(Delete),
    Send(Box<Send>),
    ColdBackup {
        ip: String,
        port: u16,
        user: String,
        password: Secret,
    },
    ColdRestore {
        ip: String,
        port: u16,
        file: String,
    },
    Clone(Box<CloneMysql>),
    Storage(Box<crate::protocol::StorageOp>),
    SetCgroup {
        port: u16,
        cgroup: Option<Cgroup>,
    },
}

impl Op {
    pub fn port(&self) -> Option<u16> {
        match self {
            Op::Install { spec, .. } => Some(spec.port),
            Op::Start { port } | Op::Stop { port } | Op::Uninstall { port } => Some(*port),
            Op::ColdBackup { port, .. } | Op::ColdRestore { port, .. } => Some(*port),
            Op::Clone(c) => Some(c.port),
            Op::Storage(s) => Some(s.port),
            Op::SetCgroup { port, .. } => Some(*port),
            Op::Delete(_) | Op::Send(_) => None,
        }
    }
}

/// `delete`: a table (`DROP TABLE`) or the binary logs (`PURGE BINARY
/// LOGS`) of an instance.
pub struct Delete {
    host: String,
    port: u16,
    user: String,
    password: Secret,
    table: Option<(String, String)>,
}

/// The request's fields ([`crate::fields`]), refused as [`Refusal`]s.
struct Fields<'a>(crate::fields::Fields<'a>);

impl Fields<'_> {
    fn text(&self, key: &str) -> Result<Option<String>, Refusal> {
        self.0.text(key).map_err(Refusal)
    }

    fn need(&self, key: &str) -> Result<String, Refusal> {
        self.0.need(key).map_err(Refusal)
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, Refusal> {
        self.0.int(key, min, max).map_err(Refusal)
    }

    fn need_int(&self, key: &str, min: i64, max: i64) -> Result<i64, Refusal> {
        self.0.need_int(key, min, max).map_err(Refusal)
    }

    fn port(&self, key: &str) -> Result<u16, Refusal> {
        Ok(self.need_int(key, 1, 65535)? as u16)
    }

    fn key(&self) -> Result<Key, Refusal> {
        Key::parse(&self.0).map_err(Refusal)
    }
}

impl Request {
    pub fn parse(body: &[u8]) -> Result<Request, Refusal> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Refusal(format!("the body is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Refusal("the body is not a JSON object".into()));
        };
        let f = Fields(crate::fields::Fields::new(&map, ""));
        let job_type = f.need("job_type")?;
        let operation = |job_type: &'static str, op: Op| -> Result<Request, Refusal> {
            Ok(Request::Operation {
                key: f.key()?,
                job_type,
                op,
            })
        };
        match job_type.as_str() {
            "get_info" => Ok(Request::GetInfo),
            "get_node" => Ok(Request::GetNode),
            "update_node" => Ok(Request::UpdateNode),
            "get_status" => Ok(Request::GetStatus {
                job_id: f.need("job_id")?,
            }),
            "auto_pullup" => Ok(Request::AutoPullup {
                minutes: f.need_int("minutes", -1, 525_600)?,
                port: f.int("port", 1, 65535)?.map(|p| p as u16),
            }),
            "mysql_cmd" => mysql_cmd(&f),
            "pgsql_cmd" | "cluster_cmd" => Err(Refusal(format!(
                "{job_type} is refused: this agent runs no shell commands and manages MariaDB \
                 instances only; it accepts {ACCEPTED}"
            ))),
            "install_mysql" => operation("install_mysql", install(&f)?),
            "start_mysql" => operation(
                "start_mysql",
                Op::Start {
                    port: f.port("port")?,
                },
            ),
            "stop_mysql" => operation(
                "stop_mysql",
                Op::Stop {
                    port: f.port("port")?,
                },
            ),
            "uninstall_mysql" => operation(
                "uninstall_mysql",
                Op::Uninstall {
                    port: f.port("port")?,
                },
            ),
            "delete" => operation("delete", delete(&f)?),
            "clone_mysql" => operation(
                "clone_mysql",
                Op::Clone(Box::new(CloneMysql::parse(&f.0).map_err(Refusal)?)),
            ),
            "fence_mysql" => Ok(Request::Fence {
                port: f.port("port")?,
            }),
            "stream_backup" => Ok(Request::StreamBackup(
                StreamBackup::parse(&f.0).map_err(Refusal)?,
            )),
            "set_cgroup" => operation(
                "set_cgroup",
                Op::SetCgroup {
                    port: f.port("port")?,
                    cgroup: Cgroup::parse(&f.0).map_err(Refusal)?,
                },
            ),
            "send" => send(&f),
            t @ ("backup_to_storage" | "restore_from_storage" | "replay_binlog") => {
                let s = crate::protocol::StorageOp::parse(&f.0, t).map_err(Refusal)?;
                Ok(Request::Operation {
                    key: s.key.clone(),
                    job_type: s.work.job_type(),
                    op: Op::Storage(Box::new(s)),
                })
            }
            "coldbackup" => operation(
                "coldbackup",
                Op::ColdBackup {
                    ip: f.need("s_ip")?,
                    port: f.port("s_port")?,
                    user: f.need("s_user")?,
                    password: Secret::new(f.text("s_pwd")?.unwrap_or_default()),
                },
            ),
            "coldrestore" => operation(
                "coldrestore",
                Op::ColdRestore {
                    ip: f.need("s_ip")?,
                    port: f.port("s_port")?,
                    file: f.need("file")?,
                },
            ),
            other => Err(Refusal(format!(
                "unknown job_type {other:?}: this agent accepts {ACCEPTED}"
            ))),
        }
    }
}

/// `mysql_cmd`: only `./startmysql.sh PORT` and `./stopmysql.sh PORT`.
fn mysql_cmd(f: &Fields<'_>) -> Result<Request, Refusal> {
    let cmd = f.need("cmd")?;
    let refuse = || {
        Refusal(format!(
            "mysql_cmd {cmd:?} is refused: this agent runs no shell; it accepts only \
             \"./startmysql.sh PORT\" and \"./stopmysql.sh PORT\" for a managed instance"
        ))
    };
    let mut words = cmd.split(' ');
    let (script, port) = (words.next(), words.next());
    if words.next().is_some() {
        return Err(refuse());
    }
    let port: u16 = port
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(refuse)?;
    // The seed's requests carry no job_id: keyed by the command.
    let key = Key {
        job_id: f
            .text("job_id")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("mysql_cmd-{}", chrono::Utc::now().timestamp_millis())),
        step: f.text("step")?.unwrap_or_default(),
        attempt: f.int("attempt", 0, i64::MAX)?.unwrap_or(0) as u64,
    };
    let op = match script {
        Some("./startmysql.sh") => Op::Start { port },
        Some("./stopmysql.sh") => Op::Stop { port },
        _ => return Err(refuse()),
    };
    Ok(Request::Operation {
        key,
        job_type: "mysql_cmd",
        op,
    })
}

/// `install_mysql`'s instance ([`InstallMysql`], the protocol's type).
fn install(f: &Fields<'_>) -> Result<Op, Refusal> {
    let i = InstallMysql::parse(&f.0).map_err(Refusal)?;
    Ok(Op::Install {
        spec: spec_of(&i),
        admin: i.admin,
        control: i.control,
    })
}

/// The agent's install of the protocol's `install_mysql`.
pub fn spec_of(i: &InstallMysql) -> InstallSpec {
    InstallSpec {
        port: i.port,
        base: i.datadir.clone(),
        innodb_size_mb: i.innodb_size_mb,
        max_connections: i.max_connections,
        server_id: i.server_id,
        read_only: i.read_only,
        semi_sync: i.semi_sync.as_str().to_string(),
        cgroup: i.cgroup,
        spider: i.spider,
    }
}

/// `delete`: a table, or the binlogs, of an instance.
fn delete(f: &Fields<'_>) -> Result<Op, Refusal> {
    let table = match f.need("file_type")?.as_str() {
        "table" => Some((f.need("s_dbname")?, f.need("s_table_name")?)),
        "binlog" => None,
        other => {
            return Err(Refusal(format!(
                "file_type {other:?}: delete takes \"table\" or \"binlog\""
            )))
        }
    };
    let d = Delete {
        host: f.need("s_ip")?,
        port: f.port("s_port")?,
        user: f.need("s_user")?,
        password: Secret::new(f.text("s_pwd")?.unwrap_or_default()),
        table,
    };
    Ok(Op::Delete(d))
}

/// `send`: a table to another instance.
fn send(f: &Fields<'_>) -> Result<Request, Refusal> {
    if f.need("file_type")? != "table" {
        return Err(Refusal("file_type: send takes \"table\"".into()));
    }
    let side = |p: &str, dbname: String, table: String| -> Result<Endpoint, Refusal> {
        Ok(Endpoint {
            host: f.need(&format!("{p}_ip"))?,
            port: f.port(&format!("{p}_port"))?,
            user: f.need(&format!("{p}_user"))?,
            password: Secret::new(f.text(&format!("{p}_pwd"))?.unwrap_or_default()),
            database: dbname,
            table: Some(table),
            host_mapping: Default::default(),
            tls: TlsOptions::default(),
            minder: None,
        })
    };
    let src = side("s", f.need("s_dbname")?, f.need("s_table_name")?)?;
    let dest = side("d", f.need("d_dbname")?, f.need("d_table_name")?)?;
    let key = f.key()?;
    let name = format!("send-{}", key.job_id);
    Ok(Request::Operation {
        key,
        job_type: "send",
        op: Op::Send(Box::new(Send { name, src, dest })),
    })
}

/// `send`: one table to another instance, through the service's own full
/// sync (a consistent snapshot copied in parallel chunks, resumable); the
/// destination table must not exist yet.
pub struct Send {
    name: String,
    src: Endpoint,
    dest: Endpoint,
}

impl Send {
    pub async fn run(self) -> Result<Value, String> {
        let route = crate::sync::Route {
            name: self.name,
            src: self.src,
            dest: self.dest,
            allow_table_exists: false,
        };
        let (progress, watch) = tokio::sync::watch::channel(Default::default());
        let sync = crate::sync::full::FullSync {
            spec: std::sync::Arc::new(route),
            run_id: 1,
            rerun: false,
            settings: crate::config::FullSyncSettings::default(),
            connect_timeout: Duration::from_secs(10),
            metrics: std::sync::Arc::new(crate::sync::NoMeter),
            progress,
            epoch: 1,
        };
        let handover = sync.run().await.map_err(|e| e.to_string())?;
        let copied = watch.borrow().clone();
        Ok(json!({"position": handover.position.to_string(), "progress": copied}))
    }
}

impl Delete {
    pub async fn run(self) -> Result<Value, String> {
        let tls = TlsOptions::default();
        let addr = ServerAddr {
            host: &self.host,
            port: self.port,
            user: &self.user,
            password: &self.password,
            tls: &tls,
        };
        let mut conn = db::connect(&addr, None, Duration::from_secs(10))
            .await
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?;
        let sql = match &self.table {
            Some((db_name, table)) => format!(
                "DROP TABLE IF EXISTS {}.{}",
                db::quote_ident(db_name),
                db::quote_ident(table)
            ),
            None => "PURGE BINARY LOGS BEFORE NOW()".to_string(),
        };
        conn.query_drop(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        let _ = conn.disconnect().await;
        Ok(json!({"done": sql}))
    }
}

/// Makes sure the administrative account exists with this password, with
/// every privilege (through the instance's socket, as root).
pub async fn create_admin(
    instance: &Instance,
    user: &str,
    password: &Secret,
    control: Option<&(String, Secret)>,
) -> Result<(), String> {
    let mut conn = root(instance, Duration::from_secs(10)).await?;
    // Each instance's own accounts: not written to its binary log, so a
    // replica does not replay its primary's.
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(|e| format!("the new instance: {e}"))?;
    // No anonymous account: it would shadow the accounts that log in
    // from another machine (Spider's logins from the compute nodes).
    conn.query_drop("DELETE FROM mysql.global_priv WHERE User = ''")
        .await
        .map_err(|e| format!("removing the anonymous accounts: {e}"))?;
    conn.query_drop("FLUSH PRIVILEGES")
        .await
        .map_err(|e| format!("removing the anonymous accounts: {e}"))?;
    let mut accounts = vec![(user, password, control.is_some())];
    if let Some((u, p)) = control {
        accounts.push((u.as_str(), p, false));
    }
    for (user, password, obeys_read_only) in accounts {
        let account = format!("{}@'%'", db::quote_string(user));
        let mut statements = vec![
            format!(
                "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {}",
                db::quote_string(password.expose())
            ),
            format!(
                "ALTER USER {account} IDENTIFIED BY {}",
                db::quote_string(password.expose())
            ),
            format!("GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION"),
        ];
        // The clients' account obeys read_only: only the manager's own
        // account turns a node writable.
        if obeys_read_only {
            statements.push(format!("REVOKE READ_ONLY ADMIN ON *.* FROM {account}"));
        }
        for sql in statements {
            // The statement holds the password: errors name the step only.
            conn.query_drop(&sql).await.map_err(|e| {
                format!(
                    "creating the account {user:?}: {}",
                    crate::redact::text(&e.to_string())
                )
            })?;
        }
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// A connection to a managed instance's socket as `root` (socket
/// authentication), within `limit`.
pub async fn root(instance: &Instance, limit: Duration) -> Result<mysql_async::Conn, String> {
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(instance.socket().to_string_lossy().to_string()))
        .user(Some("root"));
    tokio::time::timeout(limit, mysql_async::Conn::new(opts))
        .await
        .map_err(|_| format!("the instance's socket did not answer within {limit:?}"))?
        .map_err(|e| format!("the instance's socket: {e}"))
}

/// `fence_mysql`: the instance read-only and every client connection
/// killed (replication and system threads kept), through its socket; an
/// instance that does not answer there within 3 s is killed (auto pullup
/// starts it again, read-only by its `my.cnf`). What was done.
pub async fn fence(instance: &Instance) -> Result<&'static str, String> {
    let Some(pid) = instance.running_pid() else {
        return Ok("not running");
    };
    let work = async {
        let mut conn = root(instance, Duration::from_secs(3)).await?;
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<u64> = conn
            .query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                 AND USER NOT IN ('system user', 'event_scheduler') \
                 AND COMMAND NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', \
                 'Slave_worker')",
            )
            .await
            .map_err(|e| e.to_string())?;
        for id in ids {
            let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
        }
        let _ = conn.disconnect().await;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(Ok(())) => Ok("read_only"),
        _ => {
            // Hung (stopped, stuck): killed, so it cannot take a write.
            // SAFETY: kill(2) with the pid of the instance's own mariadbd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Ok("killed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        match Request::parse(body.as_bytes()) {
            Err(Refusal(why)) => why,
            Ok(_) => panic!("{body} was taken"),
        }
    }

    #[test]
    fn only_typed_operations_are_taken() {
        assert!(
            refused(r#"{"ver":"0.1","job_type":"mysql_cmd","cmd":"rm -rf /"}"#)
                .contains("accepts only")
        );
        assert!(
            refused(r#"{"job_type":"mysql_cmd","cmd":"./startmysql.sh 6001; reboot"}"#)
                .contains("accepts only")
        );
        assert!(
            refused(r#"{"job_type":"mysql_cmd","cmd":"./startmysql.sh 6001 x"}"#)
                .contains("accepts only")
        );
        assert!(
            refused(r#"{"job_type":"cluster_cmd","cmd":"bash -x bin/cluster_mgr_safe"}"#)
                .contains("no shell")
        );
        assert!(refused(r#"{"job_type":"format_disk"}"#).contains("unknown job_type"));
        assert!(refused(r#"{"job_type":"auto_pullup","minutes":"soon"}"#).contains("minutes"));
        assert!(refused(r#"{"job_type":"auto_pullup","minutes":-2}"#).contains("out of range"));
        assert!(refused(
            r#"{"job_type":"install_mysql","job_id":"1","port":6001,"datadir":"rel","server_id":1}"#
        )
        .contains("absolute"));
        assert!(
            refused(r#"{"job_type":"delete","job_id":"1","file_type":"disk"}"#)
                .contains("file_type")
        );
        assert!(refused("[1]").contains("object"));
        assert!(refused("{").contains("not JSON"));
        assert!(matches!(
            Request::parse(br#"{"ver":"0.1","job_type":"mysql_cmd","cmd":"./stopmysql.sh 6007"}"#),
            Ok(Request::Operation {
                op: Op::Stop { port: 6007 },
                ..
            })
        ));
        assert!(matches!(
            Request::parse(br#"{"ver":"0.1","job_type":"auto_pullup","minutes":"10","port":6001}"#),
            Ok(Request::AutoPullup {
                minutes: 10,
                port: Some(6001)
            })
        ));
    }
}
