//! `expand_cluster` (seed 001, 5.2): tables moved from one shard to
//! another while clients go on writing through the compute nodes.
//!
//! Per table: `copy` (a consistent copy with the data path's full sync,
//! resumable by chunk), `switch` (the stream from the copy's position,
//! caught up, verified equal online, then the cutover of
//! [`crate::cluster::comps::cutover`]: the compute nodes switched while
//! the table's writes wait at most `cutover_max_ms`; backed out and tried
//! again otherwise). Then `keep`: the target's writes streamed back to the
//! source for `reverse_keep_s`, so that `cancel_job` switches back with
//! nothing lost (the undo of `switch`). Then `finish` (the point of no
//! return): the source's table dropped with `drop_old_table` "1".
//!
//! Refused before anything is done: a table not on the source shard, one
//! spread over shards, one the target holds already, and a source whose
//! binlog retention is shorter than twice the copy's estimated time.

use crate::cluster::comps::cutover::{self, Stream, Switched};
use crate::cluster::comps::{self, apply, spider::Placement};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, PlannedStep, StepCtx, StepError};
use crate::cluster::nodes;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::position::Position;
use crate::sync::full::FullSync;
use crate::sync::Route;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ExpandCluster;

/// The copy rate the retention check assumes (bytes per second): the
/// full-sync benchmark's order, halved.
const ASSUMED_RATE: u64 = 20 << 20;
/// A cutover backed out is tried again this many times.
const ATTEMPTS: u32 = 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub src_shard: i64,
    pub dst_shard: i64,
    /// `(db, table)`.
    pub tables: Vec<(String, String)>,
    pub drop_old_table: bool,
    /// The data path's run id (its checkpoints' key).
    pub run_id: i64,
    pub cutover_lag_ms: u64,
    pub cutover_max_ms: u64,
    pub reverse_keep_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Copy { db: String, table: String },
    Switch { db: String, table: String },
    Keep,
    Finish,
}

fn label(db: &str, table: &str) -> String {
    format!("{db}.{table}")
}

/// `db.table`, refused naming the MariaDB form when given the seed's
/// PostgreSQL-style names.
pub fn db_table(text: &str, key: &str) -> Result<(String, String), Refused> {
    let t = text.trim();
    if t.contains("_$$_") {
        return Err(Refused::bad(format!(
            "{key}: {t:?} is a PostgreSQL-style name (database_$$_schema.table); this cluster is \
             MariaDB: name it database.table"
        )));
    }
    let parts: Vec<&str> = t.split('.').collect();
    match parts.as_slice() {
        [db, table] if !db.is_empty() && !table.is_empty() => {
            Ok((db.to_string(), table.to_string()))
        }
        [_, _, _] => Err(Refused::bad(format!(
            "{key}: {t:?} has three parts (database.schema.table, PostgreSQL's form); this \
             cluster is MariaDB: name it database.table"
        ))),
        _ => Err(Refused::bad(format!("{key}: {t:?} is not database.table"))),
    }
}

/// Seconds of binlog the shard's primary keeps (0: it never purges).
async fn retention_s(env: &Env, cluster_id: &str, shard: i64) -> Result<u64, Refused> {
    let (mut conn, at) = apply::shard_conn(env, cluster_id, shard)
        .await
        .map_err(|e| Refused {
            code: codes::UNREACHABLE,
            info: e.to_string(),
        })?;
    let v: Option<(u64, f64)> = conn
        .query_first("SELECT @@binlog_expire_logs_seconds, @@expire_logs_days")
        .await
        .map_err(|e| Refused {
            code: codes::UNREACHABLE,
            info: format!("{at}: {e}"),
        })?;
    let _ = conn.disconnect().await;
    let (secs, days) = v.unwrap_or((0, 0.0));
    Ok(if secs > 0 {
        secs
    } else {
        (days * 86_400.0) as u64
    })
}

/// A table's data and index bytes on a shard, if it is there.
async fn size_on(
    env: &Env,
    cluster_id: &str,
    shard: i64,
    db: &str,
    table: &str,
) -> Result<Option<u64>, Refused> {
    let (mut conn, at) = apply::shard_conn(env, cluster_id, shard)
        .await
        .map_err(|e| Refused {
            code: codes::UNREACHABLE,
            info: e.to_string(),
        })?;
    let v: Option<u64> = conn
        .exec_first(
            "SELECT CAST(DATA_LENGTH + INDEX_LENGTH AS UNSIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(|e| Refused {
            code: codes::UNREACHABLE,
            info: format!("{at}: {e}"),
        })?;
    let _ = conn.disconnect().await;
    Ok(v)
}

#[async_trait::async_trait]
impl Kind for ExpandCluster {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "expand_cluster"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let cluster_id = p.need("cluster_id")?;
        nodes::cluster(env, &cluster_id).await?;
        let src = p.need_int("src_shard_id", 1, 1 << 20)?;
        let dst = p.need_int("dst_shard_id", 1, 1 << 20)?;
        if src == dst {
            return Err(Refused::bad(
                "paras.dst_shard_id: the same shard as src_shard_id",
            ));
        }
        let primaries = comps::primaries(env, &cluster_id)
            .await
            .map_err(|e| Refused {
                code: codes::STEP_FAILED,
                info: e.to_string(),
            })?;
        for s in [src, dst] {
            if !primaries.contains_key(&s) {
                return Err(Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "cluster {cluster_id} has no shard {s} (get_cluster_detail lists them)"
                    ),
                });
            }
        }
        let listed = match p.list("table_list") {
            Ok(l) => l,
            // Klustron's clients also send it as one comma-separated text.
            Err(_) => p
                .need("table_list")?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if listed.is_empty() {
            return Err(Refused::bad(
                "paras.table_list: name at least one database.table",
            ));
        }
        let catalog = comps::catalog(env, &cluster_id)
            .await
            .map_err(|e| Refused {
                code: codes::STEP_FAILED,
                info: e.to_string(),
            })?;
        let mut tables = Vec::new();
        let mut bytes = 0u64;
        for t in &listed {
            let (db, table) = db_table(t, "paras.table_list")?;
            let placed = catalog
                .get(&(db.clone(), table.clone()))
                .ok_or_else(|| Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "{db}.{table} is not a table of cluster {cluster_id}'s compute nodes"
                    ),
                })?;
            if placed.partitioning.is_some() {
                return Err(Refused::bad(format!(
                    "{db}.{table} is spread over shards by partition: only a table on one shard is moved"
                )));
            }
            if placed.shard != src {
                return Err(Refused::bad(format!(
                    "{db}.{table} is on shard {}, not shard {src}",
                    placed.shard
                )));
            }
            if placed.state != "placed" {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "{db}.{table} is {} now: try again when it is placed",
                        placed.state
                    ),
                });
            }
            if size_on(env, &cluster_id, dst, &db, &table).await?.is_some() {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "shard {dst} holds a table {db}.{table} already: drop it there first"
                    ),
                });
            }
            bytes += size_on(env, &cluster_id, src, &db, &table)
                .await?
                .unwrap_or(0);
            if tables.contains(&(db.clone(), table.clone())) {
                return Err(Refused::bad(format!(
                    "paras.table_list names {db}.{table} twice"
                )));
            }
            tables.push((db, table));
        }
        let estimate = bytes / ASSUMED_RATE + 1;
        let retention = retention_s(env, &cluster_id, src).await?;
        if retention > 0 && retention < estimate * 2 {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "shard {src} keeps its binlog {retention} s; copying {bytes} bytes takes about \
                     {estimate} s at {} MB/s, and the stream must find its start afterwards: raise \
                     binlog_expire_logs_seconds to at least {} s first",
                    ASSUMED_RATE >> 20,
                    estimate * 2
                ),
            });
        }
        let settings = &env.settings;
        let keep = match p.int("reverse_keep_s", 0, 86_400)? {
            Some(k) => k as u64,
            None => settings.reverse_keep.as_secs(),
        };
        let mut steps = Vec::new();
        for (db, table) in &tables {
            steps.push(Step::Copy {
                db: db.clone(),
                table: table.clone(),
            });
            steps.push(Step::Switch {
                db: db.clone(),
                table: table.clone(),
            });
        }
        steps.push(Step::Keep);
        steps.push(Step::Finish);
        let resources = tables
            .iter()
            .map(|(db, t)| Resource::Table(cluster_id.clone(), label(db, t)))
            .collect();
        let mut planned = Planned::new(
            Plan {
                cluster_id,
                src_shard: src,
                dst_shard: dst,
                tables,
                drop_old_table: p.int("drop_old_table", 0, 1)?.unwrap_or(0) == 1,
                run_id: chrono::Utc::now().timestamp_millis(),
                cutover_lag_ms: settings.cutover_lag.as_millis() as u64,
                cutover_max_ms: settings.cutover_max.as_millis() as u64,
                reverse_keep_s: keep,
            },
            steps,
            resources,
        );
        if let Some(last) = planned.steps.last_mut() {
            *last = PlannedStep {
                step: Step::Finish,
                no_return: true,
            };
        }
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Copy { db, table } => format!("copy:{}", label(db, table)),
            Step::Switch { db, table } => format!("switch:{}", label(db, table)),
            Step::Keep => "keep".into(),
            Step::Finish => "finish".into(),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        match step {
            Step::Copy { db, table } => copy(ctx, plan, db, table).await,
            Step::Switch { db, table } => switch(ctx, plan, db, table).await,
            Step::Keep => keep(ctx, plan).await,
            Step::Finish => finish(ctx, plan).await,
        }
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Copy { db, table } => {
                apply::on_shard(
                    ctx.env,
                    &plan.cluster_id,
                    plan.dst_shard,
                    &format!("DROP TABLE IF EXISTS {}", apply::qualified(db, table)),
                )
                .await?;
                set_state(ctx.env, plan, db, table, plan.src_shard, "placed").await
            }
            Step::Switch { db, table } => switch_back(ctx, plan, db, table).await,
            Step::Keep | Step::Finish => Ok(()),
        }
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let tables: Vec<Value> = plan
            .tables
            .iter()
            .map(|(db, t)| {
                let of = |want: &str| {
                    results
                        .iter()
                        .find(|(s, _)| self.label(s) == format!("{want}:{}", label(db, t)))
                        .map(|(_, r)| r.clone())
                        .unwrap_or(Value::Null)
                };
                let (c, s) = (of("copy"), of("switch"));
                json!({"table": label(db, t), "rows_copied": c["rows_copied"], "copy_s": c["copy_s"],
                       "cutover_block_ms": s["block_ms"], "cutover_attempts": s["attempts"],
                       "verify": s["verify"]})
            })
            .collect();
        json!({"cluster_id": plan.cluster_id, "src_shard_id": plan.src_shard.to_string(),
               "dst_shard_id": plan.dst_shard.to_string(),
               "table_list": plan.tables.iter().map(|(d, t)| label(d, t)).collect::<Vec<_>>().join(","),
               "drop_old_table": plan.drop_old_table, "tables": tables})
    }

    fn done_info(&self) -> String {
        "expand cluster successfully".into()
    }
}

async fn set_state(
    env: &Env,
    plan: &Plan,
    db: &str,
    table: &str,
    shard: i64,
    state: &str,
) -> Result<(), StepError> {
    let Some(mut p) = comps::catalog(env, &plan.cluster_id)
        .await?
        .remove(&(db.to_string(), table.to_string()))
    else {
        return Ok(());
    };
    p.shard = shard;
    p.state = state.to_string();
    comps::put(env, &plan.cluster_id, db, table, &p).await
}

async fn placement(env: &Env, plan: &Plan, db: &str, table: &str) -> Result<Placement, StepError> {
    comps::catalog(env, &plan.cluster_id)
        .await?
        .remove(&(db.to_string(), table.to_string()))
        .ok_or_else(|| {
            StepError::definite(format!(
                "{db}.{table} is no longer in the catalog (dropped?)"
            ))
        })
}

fn index(plan: &Plan, db: &str, table: &str) -> i64 {
    plan.tables
        .iter()
        .position(|(d, t)| d == db && t == table)
        .unwrap_or(0) as i64
}

async fn route(
    env: &Env,
    plan: &Plan,
    db: &str,
    table: &str,
    from: i64,
    to: i64,
    what: &str,
) -> Result<Route, StepError> {
    Ok(Route {
        name: format!("{what}-{}-{}", plan.run_id, index(plan, db, table)),
        src: cutover::endpoint(env, &plan.cluster_id, from, db, table).await?,
        dest: cutover::endpoint(env, &plan.cluster_id, to, db, table).await?,
        allow_table_exists: false,
    })
}

/// `copy:db.t`: the table copied to the target shard as of one position.
async fn copy(ctx: &StepCtx<'_>, plan: &Plan, db: &str, table: &str) -> Result<Value, StepError> {
    let env = ctx.env;
    let p = placement(env, plan, db, table).await?;
    if p.shard == plan.dst_shard {
        return Ok(json!({"note": "already on the target shard"}));
    }
    set_state(env, plan, db, table, plan.src_shard, "moving").await?;
    apply::on_shard(
        env,
        &plan.cluster_id,
        plan.dst_shard,
        &format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            crate::db::quote_ident(db)
        ),
    )
    .await?;
    env.board
        .moving(ctx.job_id, Some(format!("copying {db}.{table}")));
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let sync = FullSync {
        spec: Arc::new(route(env, plan, db, table, plan.src_shard, plan.dst_shard, "move").await?),
        run_id: plan.run_id + index(plan, db, table),
        rerun: ctx.attempt > 1,
        settings: Default::default(),
        connect_timeout: Duration::from_secs(10),
        metrics: Arc::new(crate::sync::NoMeter),
        progress: tx,
        epoch: 1,
    };
    let started = Instant::now();
    let run = sync.run();
    tokio::pin!(run);
    let handover = loop {
        tokio::select! {
            r = &mut run => break r,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let p = rx.borrow().clone();
                ctx.progress.report(crate::protocol::Progress {
                    done: p.rows_copied,
                    total: Some(p.rows_estimated),
                    phase: "copying".into(),
                });
            }
        }
    };
    let handover = handover.map_err(|e| match e.kind() {
        crate::error::Kind::Transient => StepError::transient(e.to_string()),
        _ => StepError::definite(e.to_string()),
    })?;
    let rows = rx.borrow().rows_copied;
    Ok(json!({"position": handover.position, "rows_copied": rows,
              "copy_s": started.elapsed().as_secs_f64()}))
}

/// `switch:db.t`: streamed, caught up, verified, then the cutover.
async fn switch(ctx: &StepCtx<'_>, plan: &Plan, db: &str, table: &str) -> Result<Value, StepError> {
    let env = ctx.env;
    let p = placement(env, plan, db, table).await?;
    let (from, to) = (plan.src_shard, plan.dst_shard);
    if let Some(kept) =
        cutover::roll_forward(env, &plan.cluster_id, db, table, &p, from, to).await?
    {
        set_state(env, plan, db, table, to, "moving").await?;
        return Ok(json!({"block_ms": null, "attempts": kept["attempts"],
                         "target_at": kept["target_at"], "verify": kept["verify"],
                         "rolled_forward": true}));
    }
    if cutover::all_on(env, &plan.cluster_id, db, table, &p, plan.dst_shard).await? {
        if let Some(done) = ctx.earlier(&format!("switch:{db}.{table}")) {
            return Ok(done.clone());
        }
        set_state(env, plan, db, table, plan.dst_shard, "moving").await?;
        return Ok(
            json!({"note": "every compute node reads the target already",
                         "target_at": cutover::position_of(env, &plan.cluster_id, plan.dst_shard).await?}),
        );
    }
    let from: Position = ctx
        .earlier(&format!("copy:{db}.{table}"))
        .and_then(|v| serde_json::from_value(v["position"].clone()).ok())
        .ok_or_else(|| StepError::definite("the copy's position is not in the job"))?;
    let stream = Stream::start(
        env,
        route(env, plan, db, table, plan.src_shard, plan.dst_shard, "move").await?,
        &plan.cluster_id,
        plan.src_shard,
        plan.run_id + index(plan, db, table),
        from,
    );
    let r = cutover_loop(
        ctx,
        plan,
        db,
        table,
        &p,
        plan.src_shard,
        plan.dst_shard,
        &stream,
        true,
    )
    .await;
    let stopped = stream.stop().await;
    let v = r?;
    if let Err(e) = stopped {
        tracing::warn!(job = %ctx.job_id, error = %e, "the move's stream, after the switch");
    }
    set_state(env, plan, db, table, plan.dst_shard, "moving").await?;
    Ok(v)
}

/// Waits for the stream, verifies (once, `verify`), and tries the cutover
/// until it holds.
#[allow(clippy::too_many_arguments)]
async fn cutover_loop(
    ctx: &StepCtx<'_>,
    plan: &Plan,
    db: &str,
    table: &str,
    p: &Placement,
    from: i64,
    to: i64,
    stream: &Stream,
    verify: bool,
) -> Result<Value, StepError> {
    let env = ctx.env;
    let lag = Duration::from_millis(plan.cutover_lag_ms);
    let max = Duration::from_millis(plan.cutover_max_ms);
    let board = &env.board;
    board.moving(
        ctx.job_id,
        Some(format!(
            "streaming {db}.{table} from shard {from} to shard {to}"
        )),
    );
    cutover::wait_touching(ctx, &plan.cluster_id, stream, from, lag).await?;
    let verified = if verify {
        board.moving(ctx.job_id, Some(format!("verifying {db}.{table}")));
        Some(
            cutover::verify_equal(
                ctx,
                Arc::new(route(env, plan, db, table, from, to, "move").await?),
                db,
                table,
                stream,
            )
            .await?,
        )
    } else {
        None
    };
    let mut notes = Vec::new();
    for attempt in 1..=ATTEMPTS {
        cutover::wait_touching(ctx, &plan.cluster_id, stream, from, lag).await?;
        board.moving(
            ctx.job_id,
            Some(format!("cutover of {db}.{table} (attempt {attempt})")),
        );
        let keep = json!({"verify": verified, "attempts": attempt});
        match cutover::switch(
            env,
            &plan.cluster_id,
            db,
            table,
            p,
            from,
            to,
            stream,
            max,
            &keep,
        )
        .await?
        {
            Switched::Done {
                block_ms,
                target_at,
            } => {
                board
                    .cutover_block
                    .with_label_values(&[&plan.cluster_id])
                    .observe(block_ms as f64 / 1000.0);
                board
                    .moves
                    .with_label_values(&[
                        plan.cluster_id.as_str(),
                        if verify { "switched" } else { "switched_back" },
                    ])
                    .inc();
                board.moving(
                    ctx.job_id,
                    Some(format!("{db}.{table} served by shard {to}")),
                );
                tracing::info!(job = %ctx.job_id, table = %format!("{db}.{table}"), from, to, block_ms, attempt,
                               "cutover done");
                return Ok(
                    json!({"block_ms": block_ms, "attempts": attempt, "target_at": target_at,
                                 "verify": verified, "backed_out": notes}),
                );
            }
            Switched::BackedOut(why) => {
                board
                    .moves
                    .with_label_values(&[plan.cluster_id.as_str(), "backed_out"])
                    .inc();
                tracing::warn!(job = %ctx.job_id, table = %format!("{db}.{table}"), attempt, reason = %why,
                               "cutover backed out: writes go on to shard {from}; trying again");
                notes.push(why);
                ctx.progress.report(crate::protocol::Progress {
                    done: u64::from(attempt),
                    total: Some(u64::from(ATTEMPTS)),
                    phase: format!(
                        "cutover backed out, trying again: {}",
                        notes.last().cloned().unwrap_or_default()
                    ),
                });
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(StepError::transient(format!(
        "the cutover backed out {ATTEMPTS} times (last: {})",
        notes.last().cloned().unwrap_or_default()
    )))
}

fn reverse_from(ctx: &StepCtx<'_>, db: &str, table: &str) -> Result<Position, StepError> {
    ctx.earlier(&format!("switch:{db}.{table}"))
        .and_then(|v| serde_json::from_value(v["target_at"].clone()).ok())
        .ok_or_else(|| StepError::definite("the switch's target position is not in the job"))
}

async fn reverse_stream(
    ctx: &StepCtx<'_>,
    plan: &Plan,
    db: &str,
    table: &str,
) -> Result<Stream, StepError> {
    let env = ctx.env;
    Ok(Stream::start(
        env,
        route(env, plan, db, table, plan.dst_shard, plan.src_shard, "back").await?,
        &plan.cluster_id,
        plan.dst_shard,
        plan.run_id + 1000 + index(plan, db, table),
        reverse_from(ctx, db, table)?,
    ))
}

/// `keep`: the target's writes streamed back to the source for
/// `reverse_keep_s` (a cancel ends it at once and switches back).
async fn keep(ctx: &StepCtx<'_>, plan: &Plan) -> Result<Value, StepError> {
    let env = ctx.env;
    let mut streams = Vec::new();
    for (db, table) in &plan.tables {
        streams.push(reverse_stream(ctx, plan, db, table).await?);
    }
    env.board.moving(
        ctx.job_id,
        Some(format!(
            "switched; streaming back to shard {} for {} s (cancel_job switches back)",
            plan.src_shard, plan.reverse_keep_s
        )),
    );
    let until = Instant::now() + Duration::from_secs(plan.reverse_keep_s);
    let mut cancelled = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.progress.touch();
        if env
            .store
            .job(ctx.job_id)
            .await?
            .is_some_and(|r| r.cancel_requested)
        {
            cancelled = true;
            break;
        }
    }
    for s in streams {
        let _ = s.stop().await;
    }
    Ok(json!({"kept_s": plan.reverse_keep_s, "cancelled": cancelled}))
}

/// Undo of `switch`: the reverse stream caught up, the compute nodes
/// switched back (the same cutover), the stream stopped.
async fn switch_back(
    ctx: &StepCtx<'_>,
    plan: &Plan,
    db: &str,
    table: &str,
) -> Result<(), StepError> {
    let env = ctx.env;
    let p = placement(env, plan, db, table).await?;
    let (from, to) = (plan.dst_shard, plan.src_shard);
    let rolled = cutover::roll_forward(env, &plan.cluster_id, db, table, &p, from, to).await?;
    if rolled.is_none() && !cutover::all_on(env, &plan.cluster_id, db, table, &p, to).await? {
        let stream = reverse_stream(ctx, plan, db, table).await?;
        let r = cutover_loop(
            ctx,
            plan,
            db,
            table,
            &p,
            plan.dst_shard,
            plan.src_shard,
            &stream,
            false,
        )
        .await;
        let _ = stream.stop().await;
        r?;
    }
    set_state(env, plan, db, table, plan.src_shard, "moving").await?;
    env.board.moving(ctx.job_id, None);
    Ok(())
}

/// `finish`: the catalog says the target; the old table dropped when asked.
async fn finish(ctx: &StepCtx<'_>, plan: &Plan) -> Result<Value, StepError> {
    let env = ctx.env;
    let mut dropped = Vec::new();
    for (db, table) in &plan.tables {
        set_state(env, plan, db, table, plan.dst_shard, "placed").await?;
        if plan.drop_old_table {
            apply::on_shard(
                env,
                &plan.cluster_id,
                plan.src_shard,
                &format!("DROP TABLE IF EXISTS {}", apply::qualified(db, table)),
            )
            .await?;
            dropped.push(label(db, table));
        }
    }
    env.board.moving(ctx.job_id, None);
    Ok(json!({"dropped": dropped}))
}
