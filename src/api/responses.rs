//! The response envelope (`{"success": true, ...}` or
//! `{"success": false, "error_msg": "..."}`), the HTTP status of each error,
//! and the JSON views of a job. Passwords appear only as `******` (the spec's
//! serializer masks them).

use crate::db::Endpoint;
use crate::job::state::{
    CommandError, FullSyncProgress, IncrementalProgress, RunState, Verification,
};
use crate::job::{JobError, JobSnapshot};
use crate::preflight::PreflightError;
use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};
use warp::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token: send the header Authorization: Bearer <auth_token>")]
    Unauthorized,
    #[error("unknown operation /{0}; the operations are listed in doc/operations.md")]
    UnknownOperation(String),
    #[error("/{operation} answers {allowed} only")]
    MethodNotAllowed {
        operation: String,
        allowed: &'static str,
    },
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// The request cannot be served right now; the message says when to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The member that owns the job did not answer a forwarded request.
    #[error("{0}")]
    Upstream(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnknownOperation(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Group(e) => match e {
                crate::group::GroupError::Invalid(_) => StatusCode::BAD_REQUEST,
                crate::group::GroupError::NotFound(_) => StatusCode::NOT_FOUND,
                crate::group::GroupError::Conflict(_) => StatusCode::CONFLICT,
                crate::group::GroupError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Job(e) => match e {
                JobError::NotFound(_) => StatusCode::NOT_FOUND,
                JobError::Duplicate(_) => StatusCode::CONFLICT,
                JobError::Invalid(_) => StatusCode::BAD_REQUEST,
                JobError::Command { source, .. } => match source {
                    CommandError::Desynced
                    | CommandError::NothingToSkip { .. }
                    | CommandError::WrongSkip { .. }
                    | CommandError::NoGtid { .. }
                    | CommandError::NotIncremental { .. }
                    | CommandError::NotStreaming { .. }
                    | CommandError::VerifyRunning { .. }
                    | CommandError::NoRepair(_) => StatusCode::CONFLICT,
                    CommandError::OtherTable { .. } => StatusCode::BAD_REQUEST,
                },
                JobError::Preflight(p) => match p {
                    PreflightError::Unreachable { .. } | PreflightError::Query { .. } => {
                        StatusCode::BAD_GATEWAY
                    }
                    PreflightError::Refused { .. } | PreflightError::Unfit { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                    PreflightError::TargetExists { .. } => StatusCode::CONFLICT,
                },
                // The job moved to another member meanwhile: asking again
                // reaches it there.
                JobError::Store(crate::store::StoreError::Fenced { .. }) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                JobError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                JobError::Stopping(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    pub fn body(&self) -> Value {
        json!({"success": false, "error_msg": self.to_string()})
    }
}

/// `{"success": true}` plus the given fields.
pub fn success(fields: Value) -> Value {
    let mut object = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    object.insert("success".into(), Value::Bool(true));
    Value::Object(object)
}

pub(super) fn time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn endpoint(ep: &Endpoint) -> Value {
    // The spec's serializer masks the password; this view adds nothing to it.
    serde_json::to_value(ep).unwrap_or(Value::Null)
}

pub fn status(job: &JobSnapshot) -> Value {
    let mut status = json!({
        "name": job.spec.name,
        "state": job.status.run_state.as_str(),
        "progress_state": job.status.progress_state.as_str(),
        "owner": job.fence.member,
        "owner_epoch": job.fence.epoch,
    });
    // Applying nothing while the source moves on.
    let lag = job.lag();
    status["lag_state"] = json!(lag.state);
    status["stalled"] = json!(lag.stalled());
    if let Some(quiet) = lag.stalled_secs {
        status["stalled_secs"] = json!(quiet);
    }
    // Why a job stopped, and the transaction it holds on, where it does.
    let p = &job.progress;
    if let Some(e) = &p.last_error {
        status["last_error"] = json!(e);
    }
    if let Some(c) = &p.last_error_code {
        status["last_error_code"] = json!(c);
    }
    // Retrying after a transient error (lost connection, server restart,
    // deadlock …): the job resumes by itself.
    let running = job.status.run_state == RunState::Running;
    match (&p.incremental, &p.full_sync) {
        (Some(i), _) if job.status.progress_state.is_incremental() => {
            status["retrying"] = json!(i.retrying && running);
            status["retries"] = json!(i.retries);
            status["last_retry_error"] = json!(i.last_error);
        }
        (_, Some(f)) if f.finished_at.is_none() => {
            status["retries"] = json!(f.retries);
            status["last_retry_error"] = json!(f.last_error);
        }
        _ => {}
    }
    // The node read: the spec's source, the one followed after a failover,
    // or (a minded source) the node the arbitrator's summary names.
    let inc = p.incremental.as_ref();
    status["source_node"] = json!({
        "address": inc
            .and_then(|i| i.source_node.clone())
            .unwrap_or_else(|| job.spec.src.address()),
        "name": inc.and_then(|i| i.minder_node.clone()),
    });
    // The node written to: the spec's destination, or the managed shard's
    // primary followed after it moved.
    status["dest_node"] = json!({
        "address": inc
            .and_then(|i| i.dest_node.clone())
            .unwrap_or_else(|| job.spec.dest.address()),
    });
    if let Some(t) = &p.failed_transaction {
        status["failed_commit_seq"] = json!(p.failed_commit_seq);
        status["failed_transaction"] = json!(t);
    }
    status
}

/// A node as the cluster reports it and where the service reaches it.
fn node(mapping: &crate::hostmap::HostMapping, reported: &str) -> Value {
    let reached = crate::source::topology::split(reported).map(|(host, port)| {
        let (host, port) = mapping.translate(host, port);
        format!("{host}:{port}")
    });
    json!({"reported": reported, "connect_to": reached})
}

pub fn detail(job: &JobSnapshot) -> Value {
    let inc = job.progress.incremental.clone().unwrap_or_default();
    let mapping = &job.spec.src.host_mapping;
    let source = match &inc.source_node {
        Some(n) => node(mapping, n),
        None => json!({"reported": null, "connect_to": job.spec.src.address()}),
    };
    json!({
        "source": source,
        "source_node_name": inc.minder_node,
        "src_topology": {
            "primary": inc.topology.primary.as_deref().map(|n| node(mapping, n)),
            "replicas": inc.topology.replicas.iter().map(|n| node(mapping, n)).collect::<Vec<_>>(),
            "error": inc.topology.error,
        },
        "name": job.spec.name,
        "owner": job.fence.member,
        "owner_epoch": job.fence.epoch,
        "sync_type": job.spec.sync_type(),
        "src": endpoint(&job.spec.src),
        "dest": endpoint(&job.spec.dest),
        "allow_table_exists": job.spec.allow_table_exists,
        "on_binlog_purged": job.spec.on_binlog_purged,
        "state": job.status.run_state.as_str(),
        "progress_state": job.status.progress_state.as_str(),
        "created_at": time(job.created_at),
        "updated_at": time(job.updated_at),
    })
}

pub fn progress(job: &JobSnapshot) -> Value {
    let p = &job.progress;
    json!({
        "name": job.spec.name,
        "state": job.status.run_state.as_str(),
        "progress_state": job.status.progress_state.as_str(),
        "commit_seq": p.commit_seq,
        "position": p.position,
        "commit_timestamp": p.commit_timestamp,
        "failed_commit_seq": p.failed_commit_seq,
        "failed_transaction": p.failed_transaction,
        "skip": p.skip,
        "partial": p.partial,
        "last_error": p.last_error,
        "last_error_code": p.last_error_code,
        "full_sync_reason": p.full_sync_reason,
        "full_sync": p.full_sync.as_ref().map(|f| full_sync(f, Utc::now().timestamp_millis())),
        "snapshot": p.snapshot,
        "tables": p.tables,
        "incremental": p.incremental.as_ref().map(|i| incremental(job, i)),
        "verify": p.verify.as_ref().map(verification),
        "updated_at": time(job.updated_at),
    })
}

/// A full sync's counters with its elapsed time and an estimate of the time
/// left (rows still to copy at the rate so far; null until a row is copied).
fn full_sync(f: &FullSyncProgress, now_ms: i64) -> Value {
    let end = f.finished_at.unwrap_or(now_ms);
    let elapsed_secs = (end - f.started_at).max(0) as f64 / 1000.0;
    let remaining = f.rows_estimated.saturating_sub(f.rows_copied);
    let eta_secs = if f.finished_at.is_some() || remaining == 0 {
        Some(0.0)
    } else if f.rows_copied > 0 && elapsed_secs > 0.0 {
        Some((remaining as f64 * elapsed_secs / f.rows_copied as f64).round())
    } else {
        None
    };
    json!({
        "started_at": time(f.started_at),
        "finished_at": f.finished_at.map(time),
        "elapsed_secs": elapsed_secs,
        "eta_secs": eta_secs,
        "tables_total": f.tables_total,
        "tables_done": f.tables_done,
        "rows_copied": f.rows_copied,
        "rows_estimated": f.rows_estimated,
        "bytes_copied": f.bytes_copied,
        "connections": f.connections,
        "method": f.method,
        "lock_held_ms": f.lock_held_ms,
        "retries": f.retries,
        "last_retry_error": f.last_error,
    })
}

/// A verification as `job_progress` shows it: times as text, a table's
/// resume cursor left out.
pub fn verification(v: &Verification) -> Value {
    let tables: Vec<Value> = v
        .tables
        .iter()
        .map(|t| {
            json!({
                "table": t.table,
                "state": t.state.as_str(),
                "equal": t.equal,
                "rows_different": t.rows_different,
                "ranges": t.ranges,
                "ranges_truncated": t.ranges_truncated,
                "rows_compared": t.rows_compared,
                "chunks_compared": t.chunks_compared,
                "position": t.position,
                "verified_at": t.verified_at.map(time),
                "error": t.error,
                "repair": t.repair.as_ref().map(|r| json!({
                    "state": r.state.as_str(),
                    "requested_at": time(r.requested_at),
                    "finished_at": r.finished_at.map(time),
                    "ranges_total": r.ranges_total,
                    "ranges_repaired": r.ranges_repaired,
                    "rows_deleted": r.rows_deleted,
                    "rows_written": r.rows_written,
                })),
            })
        })
        .collect();
    json!({
        "state": v.state.as_str(),
        "started_at": time(v.started_at),
        "finished_at": v.finished_at.map(time),
        "last_error": v.last_error,
        "tables": tables,
    })
}

fn incremental(job: &JobSnapshot, i: &IncrementalProgress) -> Value {
    json!({
        "started_at": time(i.started_at),
        "binlog_file": i.binlog_file,
        "binlog_pos": i.binlog_pos,
        "source_commit_seq": i.source_commit_seq,
        "source_position": i.source_position,
        "caught_up": i.caught_up,
        "lag_secs": job.lag().secs,
        "transactions_applied": i.transactions_applied,
        "rows_applied": i.rows_applied,
        "ddl_applied": i.ddl_applied,
        "binlog_bytes_read": i.binlog_bytes_read,
        "tables_in_snapshot": i.tables_in_snapshot,
        "retries": i.retries,
        "retrying": i.retrying,
        "last_retry_error": i.last_error,
        "partial_done": i.partial_done,
        "transactions_skipped": i.transactions_skipped,
        "last_skipped": i.last_skipped,
    })
}

/// The Doris `get_lag` fields: `first_commit_seq` is the last source
/// transaction applied, `last_commit_seq` the source's newest, `lag` the
/// commit seqs between them; the timestamps are their source commit times
/// and `time_interval_secs` the time between them. `lag_secs`, `lag_state`
/// and `stalled` are as `job::lag` says (0 only when caught up while
/// streaming). Until a job has applied a transaction its seqs are 0 and its
/// timestamps empty.
pub fn lag(job: &JobSnapshot) -> Value {
    let p = &job.progress;
    let seq = p.commit_seq.unwrap_or(0);
    let inc = p.incremental.clone().unwrap_or_default();
    let head = inc.source_commit_seq.unwrap_or(seq).max(seq);
    let stamp = |s: Option<i64>| s.map(|s| time(s.saturating_mul(1000))).unwrap_or_default();
    let first_ts = p.commit_timestamp;
    let last_ts = inc.source_commit_timestamp.or(first_ts);
    let interval = match (first_ts, last_ts) {
        (Some(a), Some(b)) if head > seq => (b - a).max(0) as f64,
        _ => 0.0,
    };
    let now = job.lag();
    json!({
        "lag": head - seq,
        "lag_secs": now.secs,
        "lag_state": now.state,
        "stalled": now.stalled(),
        "stalled_secs": now.stalled_secs,
        "first_commit_seq": seq,
        "last_commit_seq": head,
        "first_binlog_timestamp": stamp(first_ts),
        "last_binlog_timestamp": stamp(if head > seq { last_ts } else { first_ts }),
        "time_interval_secs": interval,
        "position": p.position,
        "source_position": inc.source_position,
    })
}

/// A job that does not stream now (paused, retrying, or held in another
/// state) has nobody polling its source's head: `get_lag` reads it itself
/// (2 s at most), so that its `lag` counts what the source wrote meanwhile.
pub async fn source_head_now(snap: &mut crate::job::JobSnapshot) {
    use mysql_async::prelude::Queryable;
    let inc = snap.progress.incremental.clone().unwrap_or_default();
    let streaming = snap.status.run_state == crate::job::state::RunState::Running
        && snap.progress.incremental.is_some()
        && !inc.retrying;
    if streaming || snap.progress.commit_seq.is_none() {
        return;
    }
    let timeout = std::time::Duration::from_secs(2);
    let read = async {
        let mut c = crate::db::connect(&snap.spec.src.server_addr(), None, timeout)
            .await
            .ok()?;
        let text: Option<String> = c
            .query_first("SELECT @@global.gtid_binlog_pos")
            .await
            .ok()?;
        let _ = c.disconnect().await;
        crate::position::MariaGtidPos::parse(&text?).ok()
    };
    if let Ok(Some(pos)) = tokio::time::timeout(timeout, read).await {
        let seq = pos.commit_seq();
        let mut inc = inc;
        if inc.source_commit_seq.is_none_or(|s| seq > s) {
            inc.source_commit_seq = Some(seq);
            snap.progress.incremental = Some(inc);
        }
    }
}
