//! The DDL follower, on the group's leader: one task per running compute
//! node reads its binlog as a replica does (by GTID, from where the last
//! follower stopped, kept in `cm_comps.ddl_pos`) and carries every DDL
//! statement a client ran there to the shards and the other compute nodes
//! ([`handle`]). The manager's own statements on compute nodes are not
//! logged there, so nothing it does comes back to it.
//!
//! A statement is handled before its position is saved: after a crash it
//! is handled again, and every handling is "make sure X holds". One that
//! cannot be carried is refused visibly: a failed `ddl` job in `list_jobs`
//! naming it and why, `ccr_cluster_ddl_refused_total`, the status page.
//! Statements of one cluster are handled one at a time.

use super::apply::{self, ensure_db, everywhere, on_shard, place_new, qualified};
use super::board::DdlOutcome;
use super::spider::{self, Placement};
use super::{catalog, connect, is_own_table, is_system_db, put, running, CompRow};
use crate::archive::{self, Pos};
use crate::cluster::archiver::Aborting;
use crate::cluster::kind::StepError;
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::{Env, Manager};
use crate::db::quote_ident;
use crate::source::ddl::{self, DdlKind, Dialect, Name, Rename, Statement};
use futures_util::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Keeps one follower per running compute node while this member leads.
pub async fn run(m: Arc<Manager>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tasks: HashMap<(String, i64), Aborting> = HashMap::new();
    let locks: Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        Arc::default();
    let mut idle = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            () = tokio::time::sleep(idle) => {}
        }
        let wanted: Vec<CompRow> = if m.leads() {
            match m.env.store.comps().await {
                Ok(rows) => rows.into_iter().filter(|c| c.state == "running").collect(),
                Err(_) => continue,
            }
        } else {
            Vec::new()
        };
        // No compute node anywhere: looked at again less often.
        idle = if wanted.is_empty() && tasks.is_empty() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(1)
        };
        tasks.retain(|k, t| {
            wanted.iter().any(|c| (c.hostaddr.clone(), c.port) == *k) && !t.0.is_finished()
        });
        for c in wanted {
            let lock = locks
                .lock()
                .entry(c.cluster_id.clone())
                .or_default()
                .clone();
            tasks
                .entry((c.hostaddr.clone(), c.port))
                .or_insert_with(|| Aborting(tokio::spawn(comp_task(m.clone(), c, lock))));
        }
    }
    for (_, mut t) in tasks.drain() {
        t.0.abort();
        let _ = (&mut t.0).await;
    }
}

async fn comp_task(m: Arc<Manager>, comp: CompRow, lock: Arc<tokio::sync::Mutex<()>>) {
    loop {
        if let Err(e) = follow(&m, &comp, &lock).await {
            warn!(cluster_id = %comp.cluster_id, comp = %format!("{}:{}", comp.hostaddr, comp.port),
                  error = %e, "following the compute node's DDL");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Reads the compute node's binlog from the saved position until the
/// connection ends.
async fn follow(m: &Manager, comp: &CompRow, lock: &tokio::sync::Mutex<()>) -> Result<(), String> {
    let env = &m.env;
    let at = format!("{}:{}", comp.hostaddr, comp.port);
    let saved = env
        .store
        .comps()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.hostaddr == comp.hostaddr && c.port == comp.port)
        .map(|c| c.ddl_pos)
        .unwrap_or_default();
    let mut pos = Pos::parse(&saved)?;
    let (user, pw) = nodes::password(env, &comp.cluster_id)
        .await
        .map_err(|e| e.to_string())?;
    let conn = nodes::connect(&comp.hostaddr, comp.port, &user, &pw)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = crate::cluster::archiver::binlog_stream(conn, &pos, &format!("ddl-{at}"))
        .await
        .map_err(|e| format!("{at}: the binlog stream: {e}"))?;
    info!(cluster_id = %comp.cluster_id, comp = %at, from = %pos, "following the compute node's DDL");
    let mut current: Option<archive::Gtid> = None;
    let mut saved_at = Instant::now();
    let mut dirty = false;
    while let Some(event) = stream.next().await {
        let event = event.map_err(|e| format!("{at}: the binlog stream: {e}"))?;
        let kind = event.header().event_type_raw();
        let ts = i64::from(event.header().timestamp());
        match kind {
            archive::GTID => {
                current = archive::gtid_of(event.header().server_id(), event.data()).map(|g| g.0);
            }
            archive::XID => {
                if let Some(g) = current.take() {
                    pos.advance(&g);
                    dirty = true;
                }
            }
            archive::QUERY => {
                let Ok(Some(EventData::QueryEvent(q))) = event.read_data() else {
                    continue;
                };
                let session = crate::source::binlog::status::read(q.status_vars_raw());
                let sql = crate::source::binlog::status::statement_text(q.query_raw(), &session)
                    .unwrap_or_else(|| q.query().into_owned());
                let statement = ddl::parse_in(&sql, session.dialect());
                match statement {
                    Statement::Begin => continue,
                    Statement::Commit | Statement::Rollback => {}
                    _ => {
                        let schema = q.schema().into_owned();
                        let _one = lock.lock().await;
                        carry(m, comp, &schema, &sql, session.dialect(), ts).await;
                    }
                }
                if let Some(g) = current.take() {
                    pos.advance(&g);
                    // A DDL's position is saved at once.
                    env.store
                        .set_comp_ddl_pos(&comp.hostaddr, comp.port, &pos.to_string())
                        .await
                        .map_err(|e| e.to_string())?;
                    saved_at = Instant::now();
                    dirty = false;
                }
            }
            _ => {}
        }
        if dirty && saved_at.elapsed() >= Duration::from_secs(5) {
            env.store
                .set_comp_ddl_pos(&comp.hostaddr, comp.port, &pos.to_string())
                .await
                .map_err(|e| e.to_string())?;
            saved_at = Instant::now();
            dirty = false;
        }
    }
    Err(format!("{at} closed the binlog stream"))
}

/// Handles one statement until it is carried or refused (an outage is
/// waited out: the statement is never skipped).
async fn carry(m: &Manager, comp: &CompRow, schema: &str, sql: &str, dialect: Dialect, ts: i64) {
    let env = &m.env;
    let at = format!("{}:{}", comp.hostaddr, comp.port);
    let shown = crate::redact::text(sql).into_owned();
    let mut wait = Duration::from_millis(500);
    loop {
        match handle(env, comp, schema, sql, dialect).await {
            Ok(None) => return,
            Ok(Some(detail)) => {
                let board = &env.board;
                board.ddl.with_label_values(&[&comp.cluster_id]).inc();
                let lag =
                    (chrono::Utc::now().timestamp_millis() - ts * 1000).max(0) as f64 / 1000.0;
                board
                    .ddl_lag
                    .with_label_values(&[&comp.cluster_id])
                    .set(lag);
                info!(cluster_id = %comp.cluster_id, comp = %at, statement = %shown, %detail, "DDL carried");
                board.record(DdlOutcome {
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    cluster_id: comp.cluster_id.clone(),
                    comp: at.clone(),
                    statement: shown.clone(),
                    outcome: "carried".into(),
                    detail,
                });
                return;
            }
            Err(StepError::Transient(e)) => {
                warn!(cluster_id = %comp.cluster_id, comp = %at, statement = %shown, error = %e,
                      "carrying DDL: retried");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                refuse(m, comp, &shown, e.message()).await;
                return;
            }
        }
    }
}

/// A statement the compute layer cannot carry: a failed `ddl` job, the
/// metric, the status page, the log.
async fn refuse(m: &Manager, comp: &CompRow, statement: &str, why: &str) {
    let env = &m.env;
    let at = format!("{}:{}", comp.hostaddr, comp.port);
    warn!(cluster_id = %comp.cluster_id, comp = %at, %statement, reason = %why,
          "DDL refused by the compute layer");
    env.board
        .ddl_refused
        .with_label_values(&[&comp.cluster_id])
        .inc();
    env.board.record(DdlOutcome {
        at_ms: chrono::Utc::now().timestamp_millis(),
        cluster_id: comp.cluster_id.clone(),
        comp: at.clone(),
        statement: statement.to_string(),
        outcome: "refused".into(),
        detail: why.to_string(),
    });
    let now = chrono::Utc::now().timestamp_millis();
    let paras =
        serde_json::json!({"cluster_id": comp.cluster_id, "comp": at, "statement": statement});
    let row = crate::store::cluster::JobRow {
        job_type: "ddl".into(),
        paras: paras.to_string(),
        user_name: "compute-layer".into(),
        status: "failed".into(),
        plan: "{}".into(),
        attachment: "null".into(),
        error_code: crate::cluster::emit::codes::STEP_FAILED.into(),
        error_info: format!("DDL on compute node {at} not carried to the shards: {why}"),
        created_at: now,
        updated_at: now,
        ..Default::default()
    };
    if let Err(e) = env.store.record_ended(row).await {
        warn!(error = %e, "recording a refused DDL statement");
    }
}

fn name_of(n: &Name, default_db: &str) -> (String, String) {
    (
        n.db.clone().unwrap_or_else(|| default_db.to_string()),
        n.name.clone(),
    )
}

/// The database a `CREATE|DROP|ALTER DATABASE|SCHEMA` names.
fn database_named(sql: &str) -> Option<String> {
    let upper = sql.to_ascii_uppercase();
    let at = ["DATABASE", "SCHEMA"]
        .iter()
        .filter_map(|k| upper.find(k).map(|i| i + k.len()))
        .min()?;
    let mut rest = sql[at..].trim_start();
    for kw in ["IF NOT EXISTS", "IF EXISTS"] {
        if rest.len() >= kw.len() && rest[..kw.len()].eq_ignore_ascii_case(kw) {
            rest = rest[kw.len()..].trim_start();
        }
    }
    if let Some(r) = rest.strip_prefix('`') {
        let end = r.find('`')?;
        return Some(r[..end].to_string()).filter(|s| !s.is_empty());
    }
    let name: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';')
        .collect();
    Some(name).filter(|s| !s.is_empty())
}

/// Carries one statement a client ran on compute node `origin`: `None`
/// when it is not DDL the compute layer acts on, else what was done.
/// [`StepError::Definite`]: refused, with why.
pub async fn handle(
    env: &Env,
    origin: &CompRow,
    schema: &str,
    sql: &str,
    dialect: Dialect,
) -> Result<Option<String>, StepError> {
    let cluster = origin.cluster_id.as_str();
    match ddl::parse_in(sql, dialect) {
        Statement::Other(what) => match what.as_str() {
            "CREATE DATABASE" | "CREATE SCHEMA" => {
                let db =
                    database_named(sql).ok_or_else(|| StepError::definite("no database named"))?;
                if is_system_db(&db) {
                    return Ok(None);
                }
                spider::check_name("database", &db).map_err(StepError::Definite)?;
                ensure_db(env, cluster, &db).await?;
                Ok(Some(format!(
                    "database {db} on every shard and compute node"
                )))
            }
            "DROP DATABASE" | "DROP SCHEMA" => {
                let db =
                    database_named(sql).ok_or_else(|| StepError::definite("no database named"))?;
                if is_system_db(&db) {
                    return Ok(None);
                }
                let drop = format!("DROP DATABASE IF EXISTS {}", quote_ident(&db));
                for shard in super::primaries(env, cluster).await?.keys() {
                    on_shard(env, cluster, *shard, &drop).await?;
                }
                on_other_comps(env, origin, None, &drop).await?;
                env.store.delete_db_tables(cluster, &db).await?;
                Ok(Some(format!("database {db} dropped everywhere")))
            }
            "ALTER DATABASE" | "ALTER SCHEMA" => {
                for shard in super::primaries(env, cluster).await?.keys() {
                    on_shard(env, cluster, *shard, sql).await?;
                }
                on_other_comps(env, origin, Some(schema), sql).await?;
                Ok(Some("database altered everywhere".into()))
            }
            _ => Ok(None),
        },
        Statement::Ddl {
            temporary: true, ..
        } => Ok(None),
        Statement::Ddl { kind, names, .. } => {
            let first = names
                .first()
                .map(|n| name_of(n, schema))
                .ok_or_else(|| StepError::definite("no table named"))?;
            if is_system_db(&first.0) || is_own_table(&first.1) {
                return Ok(None);
            }
            match kind {
                DdlKind::CreateTable => place_new(env, cluster, origin, &first.0, &first.1)
                    .await
                    .map(Some),
                DdlKind::AlterTable | DdlKind::CreateIndex | DdlKind::DropIndex => {
                    if names.len() > 1 {
                        return Err(StepError::definite(
                            "ALTER TABLE … RENAME or EXCHANGE PARTITION is not carried: use RENAME TABLE",
                        ));
                    }
                    if ddl::mentions_words(sql, dialect, &["PARTITION"])
                        || ddl::mentions_words(sql, dialect, &["PARTITIONING"])
                        || ddl::mentions_words(sql, dialect, &["ENGINE"])
                    {
                        return Err(StepError::definite(
                            "changing a table's engine or partitions through a compute node is not \
                             carried (its rows live on the shards): create a new table and copy the rows",
                        ));
                    }
                    alter(env, origin, schema, sql, dialect, &names[0], &first)
                        .await
                        .map(Some)
                }
                DdlKind::DropTable => drop_tables(env, origin, schema, &names).await.map(Some),
                DdlKind::RenameTable => rename(env, origin, schema, &names).await.map(Some),
                DdlKind::TruncateTable => Ok(Some(
                    "truncated on the shards by the compute node itself".into(),
                )),
                DdlKind::CreateView | DdlKind::DropView => {
                    on_other_comps(env, origin, Some(schema), sql).await?;
                    Ok(Some("view carried to the other compute nodes".into()))
                }
                DdlKind::CreateSequence | DdlKind::AlterSequence | DdlKind::DropSequence => {
                    Err(StepError::definite(
                        "a sequence lives on one server: sequences are not carried to the shards \
                         (use AUTO_INCREMENT columns)",
                    ))
                }
            }
        }
        _ => Ok(None),
    }
}

/// Runs `sql` on every running compute node but `origin` (in `schema`).
async fn on_other_comps(
    env: &Env,
    origin: &CompRow,
    schema: Option<&str>,
    sql: &str,
) -> Result<(), StepError> {
    for c in running(env, &origin.cluster_id).await? {
        if c.hostaddr == origin.hostaddr && c.port == origin.port {
            continue;
        }
        let at = format!("{}:{}", c.hostaddr, c.port);
        let mut conn = connect(env, &origin.cluster_id, &c.hostaddr, c.port).await?;
        if let Some(s) = schema.filter(|s| !s.is_empty()) {
            conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(s)))
                .await
                .map_err(|e| sql_error(&at, &e))?;
            conn.query_drop(format!("USE {}", quote_ident(s)))
                .await
                .map_err(|e| sql_error(&at, &e))?;
        }
        let r = conn.query_drop(sql).await;
        let _ = conn.disconnect().await;
        match r {
            Ok(()) => {}
            // Already so there (a statement handled again).
            Err(e) if crate::db::server_code(&e).is_some_and(|c| ALREADY.contains(&c)) => {}
            Err(e) => return Err(sql_error(&at, &e)),
        }
    }
    Ok(())
}

/// Errors that mean a DDL statement already took effect: table or
/// database exists, unknown table, duplicate column or key, can't drop,
/// no such table, unknown column.
const ALREADY: [u16; 9] = [1007, 1008, 1050, 1051, 1060, 1061, 1091, 1146, 1054];

/// ALTER TABLE, CREATE INDEX, DROP INDEX: run on each of the table's
/// backends with the name rewritten, then the compute nodes' Spider tables
/// made to the new definition.
async fn alter(
    env: &Env,
    origin: &CompRow,
    schema: &str,
    sql: &str,
    dialect: Dialect,
    name: &Name,
    (db, table): &(String, String),
) -> Result<String, StepError> {
    let cluster = origin.cluster_id.as_str();
    let Some(mut p) = catalog(env, cluster)
        .await?
        .remove(&(db.clone(), table.clone()))
    else {
        // Not placed yet: placed now as the compute node holds it.
        return place_new(env, cluster, origin, db, table).await;
    };
    if p.state == "placing" {
        return place_new(env, cluster, origin, db, table).await;
    }
    if p.state == "moving" {
        return Err(moving(db, table));
    }
    for (shard, backend) in p.backends(table) {
        let rewritten = Rename {
            src_db: db,
            dest_db: db,
            table: Some((table, &backend)),
            lower_case_table_names: 0,
        }
        .rewrite(sql, dialect, schema, &[name]);
        let (mut conn, at) = apply::shard_conn(env, cluster, shard).await?;
        if !schema.is_empty() {
            let _ = conn
                .query_drop(format!("USE {}", quote_ident(schema)))
                .await;
        }
        let r = conn.query_drop(&rewritten).await;
        let _ = conn.disconnect().await;
        match r {
            Ok(()) => {}
            Err(e) if crate::db::server_code(&e).is_some_and(|c| ALREADY.contains(&c)) => {}
            Err(e) => return Err(sql_error(&at, &e)),
        }
    }
    // The new definition, as the compute node that took it holds it.
    let at = format!("{}:{}", origin.hostaddr, origin.port);
    let mut conn = connect(env, cluster, &origin.hostaddr, origin.port).await?;
    let now = apply::read_table(&mut conn, &at, db, table).await?;
    let _ = conn.disconnect().await;
    if let Some(t) = now {
        let shown = spider::split(&t.show).map_err(StepError::Definite)?;
        p.body = shown.body;
        p.options = shown.options;
    }
    put(env, cluster, db, table, &p).await?;
    let missed = everywhere(env, cluster, db, table, &p, None).await;
    Ok(format!("altered on shard(s) {:?}{missed}", p.shards()))
}

/// DROP TABLE: each named table's backends and its Spider tables on the
/// other compute nodes, then its catalog row.
async fn drop_tables(
    env: &Env,
    origin: &CompRow,
    schema: &str,
    names: &[Name],
) -> Result<String, StepError> {
    let cluster = origin.cluster_id.as_str();
    let known = catalog(env, cluster).await?;
    let mut done = Vec::new();
    for n in names {
        let (db, table) = name_of(n, schema);
        if is_system_db(&db) || is_own_table(&table) {
            continue;
        }
        let drop = format!("DROP TABLE IF EXISTS {}", qualified(&db, &table));
        if known
            .get(&(db.clone(), table.clone()))
            .is_some_and(|p| p.state == "moving")
        {
            return Err(moving(&db, &table));
        }
        if let Some(p) = known.get(&(db.clone(), table.clone())) {
            for (shard, backend) in p.backends(&table) {
                on_shard(
                    env,
                    cluster,
                    shard,
                    &format!("DROP TABLE IF EXISTS {}", qualified(&db, &backend)),
                )
                .await?;
            }
        }
        on_other_comps(env, origin, None, &drop).await?;
        env.store.delete_table(cluster, &db, &table).await?;
        done.push(format!("{db}.{table}"));
    }
    Ok(format!("dropped {}", done.join(", ")))
}

/// RENAME TABLE a TO b, …: each backend renamed on its shard, the other
/// compute nodes' tables renamed, then every compute node's Spider table
/// pointed at the new backend names.
async fn rename(
    env: &Env,
    origin: &CompRow,
    schema: &str,
    names: &[Name],
) -> Result<String, StepError> {
    let cluster = origin.cluster_id.as_str();
    let mut done = Vec::new();
    for pair in names.chunks(2) {
        let [from, to] = pair else { continue };
        let (fdb, ft) = name_of(from, schema);
        let (tdb, tt) = name_of(to, schema);
        if is_system_db(&fdb) || is_own_table(&ft) {
            continue;
        }
        spider::check_name("table", &tt).map_err(StepError::Definite)?;
        let Some(p) = catalog(env, cluster)
            .await?
            .remove(&(fdb.clone(), ft.clone()))
        else {
            // A table not placed yet: placed under its new name.
            done.push(place_new(env, cluster, origin, &tdb, &tt).await?);
            continue;
        };
        if p.state == "moving" {
            return Err(moving(&fdb, &ft));
        }
        let moved = renamed(&p, &ft, &tt);
        if tdb != fdb {
            ensure_db(env, cluster, &tdb).await?;
        }
        for ((shard, old), (_, new)) in p.backends(&ft).iter().zip(moved.backends(&tt)) {
            let (mut conn, at) = apply::shard_conn(env, cluster, *shard).await?;
            let exists: Option<i64> = conn
                .exec_first(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&fdb, old),
                )
                .await
                .map_err(|e| sql_error(&at, &e))?;
            if exists.is_some() {
                conn.query_drop(format!(
                    "RENAME TABLE {} TO {}",
                    qualified(&fdb, old),
                    qualified(&tdb, &new)
                ))
                .await
                .map_err(|e| sql_error(&at, &e))?;
            }
            let _ = conn.disconnect().await;
        }
        env.store.delete_table(cluster, &fdb, &ft).await?;
        put(env, cluster, &tdb, &tt, &moved).await?;
        let rename_there = format!(
            "RENAME TABLE {} TO {}",
            qualified(&fdb, &ft),
            qualified(&tdb, &tt)
        );
        on_other_comps(env, origin, None, &rename_there).await?;
        let missed = everywhere(env, cluster, &tdb, &tt, &moved, None).await;
        done.push(format!("{fdb}.{ft} renamed {tdb}.{tt}{missed}"));
    }
    Ok(done.join("; "))
}

/// DDL on a table an `expand_cluster` job is moving waits for the move
/// (retried, never skipped).
fn moving(db: &str, table: &str) -> StepError {
    StepError::transient(format!(
        "{db}.{table} is being moved between shards (expand_cluster): the statement is carried \
         when the move ends"
    ))
}

/// A placement's backends named after a table's new name.
fn renamed(p: &Placement, from: &str, to: &str) -> Placement {
    let mut out = p.clone();
    if let Some(parts) = out.partitioning.as_mut() {
        for x in parts.parts.iter_mut() {
            x.table = if x.table == from {
                to.to_string()
            } else {
                format!("{to}__p{}", x.name)
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_read_from_their_statements() {
        assert_eq!(database_named("CREATE DATABASE d1").as_deref(), Some("d1"));
        assert_eq!(
            database_named("create schema if not exists `odd db`").as_deref(),
            Some("odd db")
        );
        assert_eq!(
            database_named("DROP DATABASE IF EXISTS x;").as_deref(),
            Some("x")
        );
        assert_eq!(database_named("CREATE TABLE t (a int)"), None);
    }
}
