//! Moving a table's traffic between shards: the data path's stream of the
//! table from one shard to the other ([`Stream`], the service's own
//! incremental sync as a library) and the cutover ([`switch`]).
//!
//! The cutover, with the stream caught up:
//! 1. every compute node makes the new Spider table (over the target
//!    shard) beside the old one;
//! 2. every compute node's table is locked for reading (`FLUSH TABLES t
//!    WITH READ LOCK`): clients' writes to it wait there, none fails;
//! 3. the stream is frozen and let go on to the source's position now
//!    (which holds every write the table took), then held there: the
//!    target holds the table exactly;
//! 4. the target's position is read (a reverse stream starts there), then
//!    on each compute node a `RENAME TABLE t TO old, new TO t` is queued
//!    behind its lock and the lock released: the RENAME, asking for an
//!    exclusive lock, goes before the waiting writers, which then write to
//!    the target.
//!
//! Before the first RENAME, the source's table is fenced ([`super::fence`]):
//! triggers there refuse its writes, and keep the target's position and the
//! verify result. They are lifted once every compute node reads the target.
//!
//! Steps 2 and 3 must end within `cutover_max_ms`, or the cutover backs
//! out (locks released, writes go on to the source) and is tried again.
//! Before the first RENAME nothing has changed; after it, the switch is
//! finished on every compute node (rolled forward), never undone halfway.
//! A manager that dies in between leaves the fence: the compute nodes not
//! switched yet cannot write to the source, and the next manager rolls the
//! switch forward from what the fence keeps ([`roll_forward`]). A table is
//! never written on two shards.

use super::apply::{self, qualified, read_table};
use super::fence;
use super::spider::Placement;
use super::{connect, running, CompRow};
use crate::cluster::kind::{StepCtx, StepError};
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::Env;
use crate::db::Endpoint;
use crate::error::SyncError;
use crate::position::Position;
use crate::store::cluster::ClusterStore;
use crate::sync::hold::Holds;
use crate::sync::incremental::{Applied, Incremental};
use crate::sync::{Live, Route};
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A shard's table as the data path names it: the shard's primary now,
/// with the manager's account.
pub async fn endpoint(
    env: &Env,
    cluster_id: &str,
    shard: i64,
    db: &str,
    table: &str,
) -> Result<Endpoint, StepError> {
    let p = super::primaries(env, cluster_id).await?;
    let (host, port) = p
        .get(&shard)
        .ok_or_else(|| StepError::definite(format!("shard {shard} has no primary")))?;
    let (user, password) = nodes::password(env, cluster_id).await?;
    Ok(Endpoint {
        host: host.clone(),
        port: *port as u16,
        user,
        password,
        database: db.to_string(),
        table: Some(table.to_string()),
        host_mapping: Default::default(),
        tls: Default::default(),
        minder: None,
    })
}

/// The data path's live view of a move's source: the shard's primary now
/// (a failover during the move is followed).
struct ShardLive {
    src: Endpoint,
    store: ClusterStore,
    cluster_id: String,
    shard: i64,
}

#[async_trait::async_trait]
impl Live for ShardLive {
    fn source(&self) -> Endpoint {
        self.src.clone()
    }

    fn partial(&self) -> Option<crate::sync::progress::PartialSync> {
        None
    }

    async fn shard_primary(&self, _address: &str) -> Option<String> {
        let rows = self.store.instances().await.ok()?;
        rows.into_iter()
            .find(|i| {
                i.cluster_id == self.cluster_id && i.shard == self.shard && i.role == "primary"
            })
            .map(|i| format!("{}:{}", i.hostaddr, i.port))
    }
}

/// A running stream of one table from one shard to another.
pub struct Stream {
    pub holds: Arc<Holds>,
    pub progress: watch::Receiver<Applied>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SyncError>>,
}

impl Stream {
    /// Starts streaming `route` after `from` (or from its checkpoint on
    /// the destination, when it has one of this run); transient errors
    /// are retried from the checkpoint.
    pub fn start(
        env: &Env,
        route: Route,
        cluster_id: &str,
        shard: i64,
        run_id: i64,
        from: Position,
    ) -> Stream {
        let holds = Arc::new(Holds::default());
        let (tx, rx) = watch::channel(Applied::default());
        let stop = CancellationToken::new();
        let live = Arc::new(ShardLive {
            src: route.src.clone(),
            store: ClusterStore::new(env.store.meta().clone()),
            cluster_id: cluster_id.to_string(),
            shard,
        });
        let sync = Incremental {
            spec: Arc::new(route),
            run_id,
            snapshot: from,
            tables: BTreeMap::new(),
            statement_bytes: 1 << 20,
            apply_connections: 2,
            connect_timeout: Duration::from_secs(10),
            metrics: Arc::new(crate::sync::NoMeter),
            progress: tx,
            skip: None,
            live,
            full_sync: Default::default(),
            epoch: 1,
            holds: holds.clone(),
            failpoint: None,
            stop: stop.clone(),
        };
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                match sync.run().await {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if e.kind() == crate::error::Kind::Transient
                            && !stopping.is_cancelled() =>
                    {
                        tracing::warn!(job = %sync.spec.name, error = %e, "a move's stream: retried");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        });
        Stream {
            holds,
            progress: rx,
            stop,
            task,
        }
    }

    /// Whether it has applied everything it read and waits for more.
    pub fn caught_up(&self) -> bool {
        self.progress.borrow().detail.caught_up
    }

    /// Stops it; its error, if it had ended with one.
    pub async fn stop(self) -> Result<(), StepError> {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StepError::transient(format!("the stream: {e}"))),
            Err(e) => Err(StepError::transient(format!("the stream's task: {e}"))),
        }
    }

    /// Whether it has applied everything up to `at`.
    pub fn reached(&self, at: &Position) -> bool {
        let applied = self.progress.borrow().position.clone().unwrap_or_default();
        Position::new(&applied, "", 0).is_ok_and(|p| !p.gtid.is_empty() && p.reaches(at))
    }

    /// Waits, up to `wait`, until its lag is under `lag`: the source's
    /// position read now is applied within `lag` (or the source is idle
    /// and it has applied everything).
    pub async fn wait_lag(
        &self,
        env: &Env,
        cluster_id: &str,
        shard: i64,
        lag: Duration,
        wait: Duration,
    ) -> Result<Duration, StepError> {
        let until = Instant::now() + wait;
        let mut last = None;
        loop {
            if self.task.is_finished() {
                return Err(StepError::transient("the move's stream stopped"));
            }
            let at = position_of(env, cluster_id, shard).await?;
            let t0 = Instant::now();
            let give_up = (lag * 4).max(Duration::from_secs(2));
            while t0.elapsed() < give_up && !self.task.is_finished() {
                if self.reached(&at) || self.caught_up() {
                    let took = t0.elapsed();
                    if took <= lag {
                        return Ok(took);
                    }
                    last = Some(took);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if Instant::now() > until {
                return Err(StepError::transient(format!(
                    "the stream's lag is not under {} ms yet (last measured: {})",
                    lag.as_millis(),
                    last.map_or("more than the wait".to_string(), |l| format!(
                        "{} ms",
                        l.as_millis()
                    ))
                )));
            }
        }
    }
}

/// A server's binlog position now.
pub async fn position_of(env: &Env, cluster_id: &str, shard: i64) -> Result<Position, StepError> {
    let (mut conn, at) = apply::shard_conn(env, cluster_id, shard).await?;
    let gtid: Option<String> = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| sql_error(&at, &e))?;
    let status: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| sql_error(&at, &e))?;
    let _ = conn.disconnect().await;
    let (file, pos) = status
        .map(|r| {
            (
                r.get::<String, _>(0).unwrap_or_default(),
                r.get::<u64, _>(1).unwrap_or(0),
            )
        })
        .unwrap_or_default();
    Position::new(&gtid.unwrap_or_default(), &file, pos)
        .map_err(|e| StepError::definite(format!("{at}: its binlog position: {e}")))
}

/// How a cutover ended.
#[derive(Debug)]
pub enum Switched {
    /// Every compute node reads the table from the target: how long its
    /// writes waited, and the target's position when they were let go.
    Done { block_ms: u64, target_at: Position },
    /// Not now (the locks or the stream took too long): writes went on to
    /// the source; why.
    BackedOut(String),
}

/// Whether every running compute node reads `db.table` from `shard`.
pub async fn all_on(
    env: &Env,
    cluster_id: &str,
    db: &str,
    table: &str,
    p: &Placement,
    shard: i64,
) -> Result<bool, StepError> {
    for c in running(env, cluster_id).await? {
        let at = format!("{}:{}", c.hostaddr, c.port);
        let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
        let t = read_table(&mut conn, &at, db, table).await?;
        let _ = conn.disconnect().await;
        if !t.is_some_and(|t| apply::is_installed(&t, db, table, p, Some(shard))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A cutover a manager left halfway (its fence still on the source): the
/// compute nodes not switched yet are switched (their writes are refused
/// meanwhile, so no lock is needed), then the fence is lifted. What the
/// fence kept, or `None` when there was none (what an interrupted fence or
/// lift left is removed).
pub async fn roll_forward(
    env: &Env,
    cluster_id: &str,
    db: &str,
    table: &str,
    p: &Placement,
    from: i64,
    to: i64,
) -> Result<Option<Value>, StepError> {
    let kept = match fence::read(env, cluster_id, from, db, table).await? {
        fence::Found::Nothing => return Ok(None),
        fence::Found::Part => {
            fence::lift(env, cluster_id, from, db, table).await?;
            return Ok(None);
        }
        fence::Found::Whole(kept) => kept,
    };
    for c in running(env, cluster_id).await? {
        let at = format!("{}:{}", c.hostaddr, c.port);
        let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
        let switched = apply::install(&mut conn, &at, db, table, p, Some(to)).await;
        let _ = conn.disconnect().await;
        if switched? {
            tracing::info!(compute_node = %at, table = %format!("{db}.{table}"), to,
                           "a cutover left halfway: switched now");
        }
    }
    fence::lift(env, cluster_id, from, db, table).await?;
    Ok(Some(kept))
}

/// Tests: the manager aborts once the first compute node is switched (the
/// failpoint `cutover:DB.TABLE`).
fn crash_if_asked(env: &Env, db: &str, table: &str) {
    let point = format!("cutover:{db}.{table}");
    if !env.settings.failpoint_halts && env.settings.failpoint.as_deref() == Some(point.as_str()) {
        tracing::error!(%point, "failpoint: the manager aborts here");
        std::process::abort();
    }
}

/// One cutover of `db.table` (not spread) from shard `from` to shard `to`,
/// the stream `stream` carrying it; see the module doc. `keep` goes into
/// the fence (with the target's position) for a next manager.
#[allow(clippy::too_many_arguments)]
pub async fn switch(
    env: &Env,
    cluster_id: &str,
    db: &str,
    table: &str,
    p: &Placement,
    from: i64,
    to: i64,
    stream: &Stream,
    max: Duration,
    keep: &Value,
) -> Result<Switched, StepError> {
    let comps = running(env, cluster_id).await?;
    let (sw, old) = (format!("{table}__ccr_sw"), format!("{table}__ccr_old"));
    // 1. The new Spider tables, beside the old ones (those that already
    // read the target, from an interrupted switch, are left as they are).
    let mut todo: Vec<(CompRow, mysql_async::Conn, String)> = Vec::new();
    for c in comps {
        let at = format!("{}:{}", c.hostaddr, c.port);
        let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
        let now = read_table(&mut conn, &at, db, table).await?;
        if now.is_some_and(|t| apply::is_installed(&t, db, table, p, Some(to))) {
            let _ = conn.disconnect().await;
            continue;
        }
        for sql in [
            format!("DROP TABLE IF EXISTS {}", qualified(db, &sw)),
            p.spider_sql(db, &sw, table, Some(to)),
        ] {
            conn.query_drop(&sql)
                .await
                .map_err(|e| sql_error(&at, &e))?;
        }
        todo.push((c, conn, at));
    }
    // 2. Writes wait on every compute node.
    let started = Instant::now();
    let lock_wait = (max.as_secs()).clamp(1, 2);
    let mut failed = None;
    for (_, conn, at) in todo.iter_mut() {
        let lock = async {
            conn.query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
                .await?;
            conn.query_drop(format!(
                "FLUSH TABLES {} WITH READ LOCK",
                qualified(db, table)
            ))
            .await
        };
        if let Err(e) = lock.await {
            failed = Some(format!("{at}: locking the table: {e}"));
            break;
        }
    }
    let back_out = |todo: &mut Vec<(CompRow, mysql_async::Conn, String)>| {
        let conns = std::mem::take(todo);
        let sw = sw.clone();
        async move {
            for (_, mut conn, _) in conns {
                let _ = conn.query_drop("UNLOCK TABLES").await;
                let _ = conn
                    .query_drop(format!("DROP TABLE IF EXISTS {}", qualified(db, &sw)))
                    .await;
                let _ = conn.disconnect().await;
            }
        }
    };
    if let Some(why) = failed {
        back_out(&mut todo).await;
        return Ok(Switched::BackedOut(why));
    }
    // 3. The stream brought to the source's position now, and held.
    let left = |what: &str| -> Result<Duration, String> {
        max.checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "{what} took longer than cutover_max_ms ({} ms)",
                    max.as_millis()
                )
            })
    };
    let held = async {
        let wait = left("locking the compute nodes")?;
        let frozen = stream.holds.freeze(wait).await.map_err(|e| e.to_string())?;
        let at = position_of(env, cluster_id, from)
            .await
            .map_err(|e| e.to_string())?;
        let wait = left("reading the source's position")?;
        frozen.hold_at(at, wait).await.map_err(|e| e.to_string())
    }
    .await;
    let held = match held {
        Ok(h) => h,
        Err(why) => {
            back_out(&mut todo).await;
            return Ok(Switched::BackedOut(why));
        }
    };
    // 4. The target's position, then the switch on every compute node.
    let target_at = match position_of(env, cluster_id, to).await {
        Ok(p) => p,
        Err(e) => {
            drop(held);
            back_out(&mut todo).await;
            return Ok(Switched::BackedOut(format!(
                "reading the target's position: {e}"
            )));
        }
    };
    // The fence on the source, before the first compute node switches.
    let mut kept = keep.clone();
    kept["target_at"] = json!(target_at);
    if let Err(e) = fence::put(env, cluster_id, from, db, table, to, &kept).await {
        let _ = fence::lift(env, cluster_id, from, db, table).await;
        drop(held);
        back_out(&mut todo).await;
        return Ok(Switched::BackedOut(format!("fencing the source: {e}")));
    }
    let swap = apply::swap_sql(db, table, &sw, &old);
    let mut last_err = None;
    for (i, (c, conn, at)) in todo.iter_mut().enumerate() {
        if i == 1 {
            crash_if_asked(env, db, table);
        }
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", qualified(db, &old)))
            .await;
        if let Err(e) = apply::switch_behind_lock(env, cluster_id, conn, at, &swap).await {
            // Rolled forward: the next attempt finishes it.
            last_err = Some(format!("{}: {e}", c.name));
        }
    }
    let block_ms = started.elapsed().as_millis() as u64;
    drop(held);
    for (_, mut conn, _) in todo.drain(..) {
        let _ = conn.query_drop("UNLOCK TABLES").await;
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", qualified(db, &old)))
            .await;
        let _ = conn.disconnect().await;
    }
    if let Some(e) = last_err {
        // The fence stays: the next try rolls the switch forward.
        return Err(StepError::transient(format!(
            "the switch did not finish on every compute node ({e}): it is finished on the next try"
        )));
    }
    fence::lift(env, cluster_id, from, db, table)
        .await
        .map_err(|e| {
            StepError::transient(format!(
                "every compute node is switched; lifting the fence on the source: {e}"
            ))
        })?;
    Ok(Switched::Done {
        block_ms,
        target_at,
    })
}

/// Waits until the stream's lag is under `lag` (an hour at most), the
/// step's progress touched meanwhile.
pub async fn wait_touching(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    stream: &Stream,
    from: i64,
    lag: Duration,
) -> Result<(), StepError> {
    let until = Instant::now() + Duration::from_secs(3600);
    loop {
        match stream
            .wait_lag(ctx.env, cluster_id, from, lag, Duration::from_secs(5))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StepError::Transient(e)) if !e.contains("stopped") && Instant::now() < until => {
                ctx.progress.touch();
            }
            Err(e) => return Err(e),
        }
    }
}

/// The data path's online verification of the table against its source
/// while the stream runs: equal, or the step fails naming the difference.
pub async fn verify_equal(
    ctx: &StepCtx<'_>,
    spec: Arc<Route>,
    db: &str,
    table: &str,
    stream: &Stream,
) -> Result<Value, StepError> {
    let (tx, rx) = tokio::sync::watch::channel(crate::sync::progress::Verification::new(
        vec![table.to_string()],
        crate::sync::now_ms(),
    ));
    let v = crate::sync::verify::Verify {
        source: spec.src.clone(),
        spec,
        settings: crate::sync::verify::VerifySettings {
            rows_per_second: 0,
            ..Default::default()
        },
        connect_timeout: Duration::from_secs(10),
        statement_bytes: 1 << 20,
        epoch: 1,
        holds: stream.holds.clone(),
        metrics: Arc::new(crate::sync::NoMeter),
        progress: tx,
    };
    let run = v.run();
    tokio::pin!(run);
    let r = loop {
        tokio::select! {
            r = &mut run => break r,
            () = tokio::time::sleep(Duration::from_secs(1)) => ctx.progress.touch(),
        }
    };
    r.map_err(|e| StepError::transient(format!("verifying {db}.{table}: {e}")))?;
    let done = rx.borrow().clone();
    let t = done.tables.first().cloned().unwrap_or_default();
    if t.equal != Some(true) {
        return Err(StepError::definite(format!(
            "verifying {db}.{table} before the cutover: {} rows differ{}",
            t.rows_different,
            t.error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    Ok(json!({"equal": true, "rows_compared": t.rows_compared}))
}
