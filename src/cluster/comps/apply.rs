//! Making the compute layer hold what the catalog says: a new table
//! placed and made on its shards, a compute node's local table turned into
//! a Spider table with its rows carried to the shard (writes waiting, none
//! lost), Spider tables installed or switched atomically on every compute
//! node (`RENAME TABLE t TO old, new TO t`).

use super::spider::{self, Listed, Placement};
use super::{catalog, connect, is_own_table, is_system_db, primaries, put, running, CompRow};
use crate::cluster::kind::StepError;
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::Env;
use crate::db::{quote_ident, quote_string};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;

/// How long the manager's own DDL waits for a table's lock.
const LOCK_WAIT_S: u64 = 10;

/// A row of `information_schema.PARTITIONS`: name, method, expression,
/// description, subpartition method.
type PartitionRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What a compute node holds of one table.
#[derive(Clone, Debug)]
pub struct CompTable {
    pub show: String,
    pub engine: String,
    pub listed: Vec<Listed>,
}

/// `db.table` as statements name it.
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

/// A compute node's table, if it has it.
pub async fn read_table(
    conn: &mut Conn,
    at: &str,
    db: &str,
    table: &str,
) -> Result<Option<CompTable>, StepError> {
    let engine: Option<Option<String>> = conn
        .exec_first(
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             AND TABLE_TYPE = 'BASE TABLE'",
            (db, table),
        )
        .await
        .map_err(|e| sql_error(at, &e))?;
    let Some(engine) = engine else {
        return Ok(None);
    };
    let row: Result<Option<(String, String)>, _> = conn
        .query_first(format!("SHOW CREATE TABLE {}", qualified(db, table)))
        .await;
    let show = match row {
        Ok(Some((_, show))) => show,
        Ok(None) => return Ok(None),
        // A Spider table whose backend is gone or unreachable (renamed on
        // the shard first): it is replaced, not read.
        Err(e)
            if engine
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case("SPIDER"))
                && crate::db::server_code(&e)
                    .is_some_and(|c| c == 1429 || (12500..13000).contains(&c)) =>
        {
            String::new()
        }
        Err(e) => return Err(sql_error(at, &e)),
    };
    // Partitions are listed for a local table only (to place it): a Spider
    // table's would be read from its backends.
    let spider = engine
        .as_deref()
        .is_some_and(|x| x.eq_ignore_ascii_case("SPIDER"));
    let listed: Vec<PartitionRow> = if spider || !show.contains("PARTITION BY") {
        Vec::new()
    } else {
        conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, PARTITION_DESCRIPTION, \
             SUBPARTITION_METHOD FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = ? \
             AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL ORDER BY PARTITION_ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| sql_error(at, &e))?
    };
    Ok(Some(CompTable {
        show,
        engine: engine.unwrap_or_default(),
        listed: listed
            .into_iter()
            .map(|(n, m, x, d, s)| Listed {
                name: n.unwrap_or_default(),
                method: m.unwrap_or_default(),
                expression: x.unwrap_or_default(),
                description: d,
                sub: s.is_some(),
            })
            .collect(),
    }))
}

/// A session on a shard's primary (its statements replicated to the
/// shard's replicas).
pub async fn shard_conn(
    env: &Env,
    cluster_id: &str,
    shard: i64,
) -> Result<(Conn, String), StepError> {
    let p = primaries(env, cluster_id).await?;
    let (h, port) = p
        .get(&shard)
        .ok_or_else(|| StepError::definite(format!("shard {shard} has no primary")))?;
    let (user, pw) = nodes::password(env, cluster_id).await?;
    let at = format!("{h}:{port}");
    let conn = nodes::connect(h, *port, &user, &pw).await?;
    Ok((conn, at))
}

/// Runs `sql` on a shard's primary.
pub async fn on_shard(env: &Env, cluster_id: &str, shard: i64, sql: &str) -> Result<(), StepError> {
    let (mut conn, at) = shard_conn(env, cluster_id, shard).await?;
    let r = conn.query_drop(sql).await.map_err(|e| sql_error(&at, &e));
    let _ = conn.disconnect().await;
    r
}

/// Every shard of the cluster, the one with the least data first (ties:
/// the fewest tables, then the lowest number).
pub async fn shards_by_load(env: &Env, cluster_id: &str) -> Result<Vec<i64>, StepError> {
    let mut load = Vec::new();
    for shard in primaries(env, cluster_id).await?.keys() {
        let (mut conn, at) = shard_conn(env, cluster_id, *shard).await?;
        let row: Option<(Option<i64>, i64)> = conn
            .query_first(
                "SELECT CAST(SUM(DATA_LENGTH + INDEX_LENGTH) AS SIGNED), COUNT(*) \
                 FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA \
                 NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', 'ccr_sys')",
            )
            .await
            .map_err(|e| sql_error(&at, &e))?;
        let _ = conn.disconnect().await;
        let (bytes, tables) = row.unwrap_or((None, 0));
        load.push((bytes.unwrap_or(0), tables, *shard));
    }
    load.sort();
    Ok(load.into_iter().map(|l| l.2).collect())
}

/// The database on every shard and every running compute node.
pub async fn ensure_db(env: &Env, cluster_id: &str, db: &str) -> Result<(), StepError> {
    let sql = format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(db));
    for shard in primaries(env, cluster_id).await?.keys() {
        on_shard(env, cluster_id, *shard, &sql).await?;
    }
    for c in running(env, cluster_id).await? {
        let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
        conn.query_drop(&sql)
            .await
            .map_err(|e| sql_error(&format!("{}:{}", c.hostaddr, c.port), &e))?;
        let _ = conn.disconnect().await;
    }
    Ok(())
}

/// Whether a compute node's table is the Spider table `placement` (and
/// `to_shard`) make.
pub fn is_installed(
    t: &CompTable,
    db: &str,
    table: &str,
    placement: &Placement,
    to_shard: Option<i64>,
) -> bool {
    if !t.engine.eq_ignore_ascii_case("SPIDER") {
        return false;
    }
    let Ok(shown) = spider::split(&t.show) else {
        return false;
    };
    if shown.body != placement.body {
        return false;
    }
    match (&placement.partitioning, to_shard) {
        (None, to) => {
            spider::shard_of(&t.show) == Some(to.unwrap_or(placement.shard))
                && t.show
                    .contains(&format!("database \"{db}\", table \"{table}\""))
        }
        (Some(p), _) => p.parts.iter().all(|x| {
            t.show.contains(&format!(
                "srv \"{}\", database \"{db}\", table \"{}\"",
                spider::server_name(x.shard),
                x.table
            ))
        }),
    }
}

/// `db.table` swapped for `db.new` in one statement, the old one kept as
/// `db.old`.
pub fn swap_sql(db: &str, table: &str, new: &str, old: &str) -> String {
    format!(
        "RENAME TABLE {} TO {}, {} TO {}",
        qualified(db, table),
        qualified(db, old),
        qualified(db, new),
        qualified(db, table)
    )
}

/// Makes sure a compute node holds `db.table` as the Spider table of
/// `placement` (switched atomically when it holds another); whether it
/// changed anything. A local table of the same name (not Spider) is
/// refused: its rows would be lost.
pub async fn install(
    conn: &mut Conn,
    at: &str,
    db: &str,
    table: &str,
    placement: &Placement,
    to_shard: Option<i64>,
) -> Result<bool, StepError> {
    let now = read_table(conn, at, db, table).await?;
    if let Some(t) = &now {
        if is_installed(t, db, table, placement, to_shard) {
            return Ok(false);
        }
        if !t.engine.eq_ignore_ascii_case("SPIDER") {
            return Err(StepError::definite(format!(
                "{at} holds {db}.{table} as a local {} table: it is not replaced by the shards' \
                 (drop or rename it there)",
                t.engine
            )));
        }
    }
    let new = format!("{table}__ccr_new");
    let old = format!("{table}__ccr_old");
    let mut stmts = vec![
        format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(db)),
        format!("DROP TABLE IF EXISTS {}", qualified(db, &new)),
        placement.spider_sql(db, &new, table, to_shard),
    ];
    if now.is_some() {
        stmts.push(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_S}"));
        stmts.push(format!("DROP TABLE IF EXISTS {}", qualified(db, &old)));
        stmts.push(swap_sql(db, table, &new, &old));
        stmts.push(format!("DROP TABLE IF EXISTS {}", qualified(db, &old)));
    } else {
        stmts.push(format!(
            "RENAME TABLE {} TO {}",
            qualified(db, &new),
            qualified(db, table)
        ));
    }
    for sql in stmts {
        conn.query_drop(&sql).await.map_err(|e| sql_error(at, &e))?;
    }
    Ok(true)
}

/// Every placed table of the catalog onto one compute node (a new one, or
/// one that missed some); how many it was given.
pub async fn give_all(
    env: &Env,
    cluster_id: &str,
    conn: &mut Conn,
    at: &str,
) -> Result<usize, StepError> {
    let mut given = 0;
    for ((db, table), p) in catalog(env, cluster_id).await? {
        // A table being placed is its placer's; one being moved, its move's
        // (the catalog may lag its switch by a moment).
        if p.state != "placed" {
            continue;
        }
        if install(conn, at, &db, &table, &p, None).await? {
            given += 1;
        }
    }
    Ok(given)
}

/// A table created on compute node `origin`: placed (the shard with the
/// least data, or its partitions round robin), made on its shards, its
/// rows carried there while its writes wait, then a Spider table on every
/// compute node. Safe to run again: an interrupted placement is resumed.
pub async fn place_new(
    env: &Env,
    cluster_id: &str,
    origin: &CompRow,
    db: &str,
    table: &str,
) -> Result<String, StepError> {
    if is_system_db(db) || is_own_table(table) {
        return Ok("not a client table".into());
    }
    spider::check_name("database", db).map_err(StepError::Definite)?;
    spider::check_name("table", table).map_err(StepError::Definite)?;
    let at = format!("{}:{}", origin.hostaddr, origin.port);
    let mut conn = connect(env, cluster_id, &origin.hostaddr, origin.port).await?;
    let Some(t) = read_table(&mut conn, &at, db, table).await? else {
        let _ = conn.disconnect().await;
        return Ok("gone from the compute node before it was placed".into());
    };
    let known = catalog(env, cluster_id)
        .await?
        .remove(&(db.to_string(), table.to_string()));
    let shown = spider::split(&t.show).map_err(StepError::Definite)?;
    let placement = match known {
        Some(p) if p.state == "placing" || is_installed(&t, db, table, &p, None) => p,
        Some(p) if t.engine.eq_ignore_ascii_case("SPIDER") => {
            // A Spider table made there (`CREATE TABLE … LIKE`): ours now.
            let _ = p;
            return Err(StepError::definite(format!(
                "{db}.{table} is in the catalog already with another definition"
            )));
        }
        _ => {
            let order = shards_by_load(env, cluster_id).await?;
            let first = *order
                .first()
                .ok_or_else(|| StepError::definite("the cluster has no shard"))?;
            let partitioning = if shown.partitioned {
                let mut by_number = order.clone();
                by_number.sort();
                let start = by_number.iter().position(|s| *s == first).unwrap_or(0);
                Some(
                    spider::partitioning(table, &t.listed, &by_number, start)
                        .map_err(StepError::Definite)?,
                )
            } else {
                None
            };
            let mut options = shown.options.clone();
            if let Some(c) = &shown.comment {
                options = format!("{options} COMMENT={}", quote_string(c));
            }
            Placement {
                body: shown.body.clone(),
                options,
                shard: if partitioning.is_some() { 0 } else { first },
                partitioning,
                state: "placing".into(),
            }
        }
    };
    if placement.state == "placing" {
        put(env, cluster_id, db, table, &placement).await?;
        ensure_db(env, cluster_id, db).await?;
        let mut spider_opts = placement.clone();
        // A Spider table's COMMENT is its connection: the table's own
        // comment stays on the backends.
        spider_opts.options = shown.options.clone();
        for (shard, backend) in placement.backends(table) {
            on_shard(env, cluster_id, shard, &placement.backend_sql(db, &backend)).await?;
        }
        if !t.engine.eq_ignore_ascii_case("SPIDER") {
            carry_rows(env, cluster_id, &mut conn, &at, db, table, &spider_opts).await?;
        }
        let mut placed = spider_opts;
        placed.state = "placed".into();
        install(&mut conn, &at, db, table, &placed, None).await?;
        put(env, cluster_id, db, table, &placed).await?;
        let _ = conn.disconnect().await;
        let others = everywhere(env, cluster_id, db, table, &placed, Some(origin)).await;
        return Ok(format!(
            "placed on shard(s) {:?}{}",
            placed.shards(),
            others
        ));
    }
    let _ = conn.disconnect().await;
    let others = everywhere(env, cluster_id, db, table, &placement, Some(origin)).await;
    Ok(format!("already placed{others}"))
}

/// The Spider table of `placement` on every running compute node but
/// `except`; what could not be done now (the keeper gives it later).
pub async fn everywhere(
    env: &Env,
    cluster_id: &str,
    db: &str,
    table: &str,
    placement: &Placement,
    except: Option<&CompRow>,
) -> String {
    let mut missed = Vec::new();
    let comps = match running(env, cluster_id).await {
        Ok(c) => c,
        Err(e) => return format!("; the other compute nodes later ({e})"),
    };
    for c in comps {
        if except.is_some_and(|x| x.hostaddr == c.hostaddr && x.port == c.port) {
            continue;
        }
        let at = format!("{}:{}", c.hostaddr, c.port);
        let r = async {
            let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
            let r = install(&mut conn, &at, db, table, placement, None).await;
            let _ = conn.disconnect().await;
            r
        }
        .await;
        if let Err(e) = r {
            missed.push(format!("{at}: {e}"));
        }
    }
    if missed.is_empty() {
        String::new()
    } else {
        format!("; not yet on {}", missed.join("; "))
    }
}

/// A compute node's local table turned into the Spider table over its
/// backends with every row it holds: its rows copied while it is locked
/// for reading (writers wait), then the switch queued behind that lock so
/// that it runs before any waiting writer, which then writes to the
/// shards.
async fn carry_rows(
    env: &Env,
    cluster_id: &str,
    conn: &mut Conn,
    at: &str,
    db: &str,
    table: &str,
    placement: &Placement,
) -> Result<(), StepError> {
    let new = format!("{table}__ccr_new");
    let old = format!("{table}__ccr_old");
    let q = |t: &str| qualified(db, t);
    for sql in [
        format!("DROP TABLE IF EXISTS {}", q(&new)),
        placement.spider_sql(db, &new, table, None),
        format!("DROP TABLE IF EXISTS {}", q(&old)),
        format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_S}"),
        format!("LOCK TABLES {} READ, {} WRITE", q(table), q(&new)),
        // What an interrupted attempt left on the backends.
        format!("DELETE FROM {}", q(&new)),
        format!("INSERT INTO {} SELECT * FROM {}", q(&new), q(table)),
    ] {
        if let Err(e) = conn.query_drop(&sql).await {
            let _ = conn.query_drop("UNLOCK TABLES").await;
            return Err(sql_error(at, &e));
        }
    }
    let swap = swap_sql(db, table, &new, &old);
    let switched = switch_behind_lock(env, cluster_id, conn, at, &swap).await;
    let _ = conn.query_drop("UNLOCK TABLES").await;
    switched?;
    conn.query_drop(format!("DROP TABLE IF EXISTS {}", q(&old)))
        .await
        .map_err(|e| sql_error(at, &e))?;
    Ok(())
}

/// Runs `swap` (a RENAME) on a second session of the node `conn` is on,
/// while `conn` holds a table lock: once the RENAME waits for that lock,
/// the lock is released and the RENAME, asking for an exclusive lock,
/// goes before every writer waiting. Returns when the RENAME is done.
pub async fn switch_behind_lock(
    env: &Env,
    cluster_id: &str,
    conn: &mut Conn,
    at: &str,
    swap: &str,
) -> Result<(), StepError> {
    let (host, port) = at
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<i64>().ok()?)))
        .ok_or_else(|| StepError::definite(format!("bad address {at}")))?;
    let mut second = connect(env, cluster_id, &host, port).await?;
    let id: Option<u64> = second
        .query_first("SELECT CONNECTION_ID()")
        .await
        .map_err(|e| sql_error(at, &e))?;
    let id = id.unwrap_or(0);
    second
        .query_drop(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_S}"))
        .await
        .map_err(|e| sql_error(at, &e))?;
    let swap = swap.to_string();
    let at2 = at.to_string();
    let task = tokio::spawn(async move {
        let r = second
            .query_drop(&swap)
            .await
            .map_err(|e| sql_error(&at2, &e));
        let _ = second.disconnect().await;
        r
    });
    // Until the RENAME waits for the lock (or ended: an error).
    for _ in 0..200 {
        let state: Option<Option<String>> = conn
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (id,),
            )
            .await
            .map_err(|e| sql_error(at, &e))?;
        if task.is_finished() || state.flatten().is_some_and(|s| s.contains("metadata lock")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.query_drop("UNLOCK TABLES")
        .await
        .map_err(|e| sql_error(at, &e))?;
    task.await
        .map_err(|e| StepError::transient(format!("the switch's session: {e}")))?
}
