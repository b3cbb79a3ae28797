//! The HTTP API: the Doris CCR syncer's operations, one path each
//! (`POST /create_ccr`, `POST /pause`, …; `version` and `metrics` answer GET
//! too). The only module that knows HTTP and JSON request shapes.
//!
//! One warp filter takes every request; [`handle`] checks the bearer token,
//! reads the body (at most [`MAX_BODY_BYTES`]), dispatches on the operation
//! and turns every outcome into the Doris envelope with a fitting status.

mod admin;
pub mod https;
mod requests;
mod responses;
pub mod view;

use crate::job::state::JobCommand;
use crate::job::JobManager;
use crate::metrics::Metrics;
use crate::secret::Secret;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use requests::{
    parse, CreateRequest, EmptyRequest, HostMappingRequest, NameRequest, PartialRequest,
    RepairRequest, SkipRequest, UpdateTlsRequest, VerifyRequest,
};
use responses::{success, ApiError};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tracing::{debug, info};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every operation, as metrics label it.
const OPERATIONS: [&str; 29] = [
    "HttpService/Emit",
    "version",
    "metrics",
    "create_ccr",
    "get_lag",
    "pause",
    "resume",
    "delete",
    "list_jobs",
    "job_detail",
    "job_progress",
    "job_status",
    "update_host_mapping",
    "add_host_mapping",
    "job_skip_binlog",
    "force_fullsync",
    "desync",
    "partial_sync",
    "update_tls",
    "verify",
    "repair",
    "view",
    "stat",
    "member/add",
    "member/remove",
    "leadership/transfer",
    "config/get",
    "config/set",
    "unknown",
];

/// The operations on one job, named by the body's `name`: served by the
/// member that owns the job, wherever they arrive.
const JOB_OPERATIONS: [&str; 16] = [
    "get_lag",
    "pause",
    "resume",
    "delete",
    "job_detail",
    "job_progress",
    "job_status",
    "update_host_mapping",
    "add_host_mapping",
    "job_skip_binlog",
    "force_fullsync",
    "desync",
    "partial_sync",
    "update_tls",
    "verify",
    "repair",
];

pub struct ApiState {
    pub manager: Arc<JobManager>,
    pub group: Arc<crate::group::Group>,
    /// The cluster manager: `POST /HttpService/Emit`.
    pub cluster: Arc<crate::cluster::Manager>,
    /// Trusts the other members' HTTPS, when this one serves HTTPS or has
    /// `[group] peer_ca`.
    pub peer_tls: Option<tokio_rustls::TlsConnector>,
    pub metrics: Arc<Metrics>,
    pub auth_token: Option<Secret>,
    /// Jobs' TLS default and minimum.
    pub tls: crate::config::TlsPolicy,
    /// How the status page names the store and this service.
    pub store_description: String,
    pub address: String,
    /// Each CCR job's lag over the last hour, for the status page.
    pub job_lag: Arc<crate::history::History>,
}

pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let state = warp::any().map(move || state.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path::full()
        .and(warp::method())
        .and(query)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-length"))
        .and(warp::header::optional::<String>(admin::FORWARDED))
        .and(warp::body::stream())
        .and(state)
        .then(
            |path: warp::path::FullPath,
             method,
             query: String,
             auth,
             length,
             forwarded: Option<String>,
             body,
             state: Arc<ApiState>| async move {
                let operation = path.as_str().trim_matches('/').to_string();
                let request = Incoming {
                    operation: &operation,
                    method,
                    query: &query,
                    auth,
                    forwarded: forwarded.is_some(),
                };
                handle(&state, request, length, body).await
            },
        )
        .or_else(|_rejection| async {
            // Only a request the filters above cannot read lands here.
            let e = ApiError::BadRequest("malformed HTTP request".into());
            Ok::<_, Infallible>((warp::reply::with_status(
                warp::reply::json(&e.body()),
                e.status(),
            )
            .into_response(),))
        })
}

/// What `handle` needs of a request besides its body.
struct Incoming<'a> {
    operation: &'a str,
    method: Method,
    query: &'a str,
    auth: Option<String>,
    /// Sent by another member: served here, never sent on.
    forwarded: bool,
}

async fn handle<S, B>(
    state: &ApiState,
    request: Incoming<'_>,
    length: Option<String>,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let Incoming {
        operation,
        method,
        query,
        auth,
        forwarded,
    } = request;
    let page = operation == "view" || operation.starts_with("view/");
    let label = OPERATIONS
        .iter()
        .find(|op| **op == operation || (page && **op == "view"))
        .copied()
        .unwrap_or("unknown");
    let result = async {
        authorize(state.auth_token.as_ref(), auth.as_deref())?;
        let body = read_body(length.as_deref(), body).await?;
        if page {
            return view_page(state, operation, &method);
        }
        if operation == "HttpService/Emit" {
            if method != Method::POST {
                return Err(ApiError::MethodNotAllowed {
                    operation: operation.into(),
                    allowed: "POST",
                });
            }
            let (status, answer) = state.cluster.emit(&body).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return Ok(warp::reply::with_status(warp::reply::json(&answer), status).into_response());
        }
        if let Some(response) = admin_operation(state, operation, &method, query, &body).await {
            return response;
        }
        if let Some(response) =
            route(state, operation, &method, auth.as_deref(), forwarded, &body).await?
        {
            return Ok(response);
        }
        dispatch(state, operation, &method, &body).await
    }
    .await;
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            let status = e.status();
            // 502 and 400-range answers are the caller's or an upstream's
            // problem; only our own failures are errors.
            if status == StatusCode::INTERNAL_SERVER_ERROR
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                tracing::error!(operation, error = %e, "request failed");
            } else {
                info!(operation, status = status.as_u16(), error = %e, "request refused");
            }
            let mut body = e.body();
            redact(&mut body);
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
    };
    state
        .metrics
        .count_request(label, response.status().as_u16());
    response
}

fn authorize(token: Option<&Secret>, header: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if crate::secret::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// An oversized body up to this size is read (and dropped) before the 413
/// goes out: a client still sending when the server answers and closes sees
/// a broken pipe instead of the answer. Bigger ones are refused at once.
const DRAIN_LIMIT: usize = 8 * MAX_BODY_BYTES;

async fn drain<S, B>(body: &mut S, mut budget: usize)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    while let Some(Ok(chunk)) = body.next().await {
        match budget.checked_sub(chunk.remaining()) {
            Some(left) => budget = left,
            None => break,
        }
    }
}

async fn read_body<S, B>(length: Option<&str>, mut body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let too_large = ApiError::TooLarge {
        limit: MAX_BODY_BYTES,
    };
    if let Some(length) = length {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("bad Content-Length {length:?}")))?;
        if length > MAX_BODY_BYTES {
            if length <= DRAIN_LIMIT {
                drain(&mut body, DRAIN_LIMIT).await;
            }
            return Err(too_large);
        }
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::Body(e.to_string()))?;
        if buf.len() + chunk.remaining() > MAX_BODY_BYTES {
            drain(
                &mut body,
                DRAIN_LIMIT.saturating_sub(buf.len() + chunk.remaining()),
            )
            .await;
            return Err(too_large);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// `GET /view` (every job) and `GET /view/NAME` (one job), as HTML.
fn view_page(state: &ApiState, operation: &str, method: &Method) -> Result<Response, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed {
            operation: "view".into(),
            allowed: "GET",
        });
    }
    let html = match operation.strip_prefix("view/") {
        Some(name) => view::job_page(&state.manager.snapshot(name)?),
        None => {
            let mut names = state.manager.list();
            names.sort();
            let jobs: Vec<_> = names
                .iter()
                .filter_map(|n| state.manager.snapshot(n).ok())
                .collect();
            let group = group_lines(&state.group);
            view::status_page(
                &jobs,
                &group,
                &state.metrics,
                &state.store_description,
                &state.address,
            )
            .replace(
                "</body></html>",
                &format!(
                    "<h3>CCR jobs' lag, last hour</h3>{}{}</body></html>",
                    state.job_lag.charts("No sample yet (one every 10 s)."),
                    state.cluster.status_html()
                ),
            )
        }
    };
    Ok(warp::reply::with_header(html, "content-type", "text/html; charset=utf-8").into_response())
}

/// The group's admin operations; None for any other.
async fn admin_operation(
    state: &ApiState,
    operation: &str,
    method: &Method,
    query: &str,
    body: &[u8],
) -> Option<Result<Response, ApiError>> {
    let group = &state.group;
    let get = |allowed: bool| {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed {
                operation: operation.to_string(),
                allowed: if operation == "stat" {
                    "GET and POST"
                } else {
                    "GET"
                },
            })
        }
    };
    let result = match operation {
        "stat" => match get(method == Method::GET || method == Method::POST) {
            Ok(()) => admin::stat(group).await,
            Err(e) => Err(e),
        },
        "config/get" => match get(method == Method::GET) {
            Ok(()) => admin::config_get(group, query).await,
            Err(e) => Err(e),
        },
        "member/add" | "member/remove" | "leadership/transfer" | "config/set" => {
            match require_post(operation, method) {
                Err(e) => Err(e),
                Ok(()) => match operation {
                    "member/add" => admin::member_add(group, body).await,
                    "member/remove" => admin::member_remove(group, body).await,
                    "leadership/transfer" => admin::leadership_transfer(group, body).await,
                    _ => admin::config_set(group, body).await,
                },
            }
        }
        _ => return None,
    };
    Some(result.map(json_reply))
}

/// A call on a job this member does not run goes to the member that owns
/// it; None when it is served here.
async fn route(
    state: &ApiState,
    operation: &str,
    method: &Method,
    auth: Option<&str>,
    forwarded: bool,
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    if !JOB_OPERATIONS.contains(&operation) || method != Method::POST {
        return Ok(None);
    }
    // A body without a readable name is refused by the operation itself.
    let Some(name) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    match state.group.route(&name).await? {
        crate::group::Route::Here => Ok(None),
        // A job nobody holds can still be deleted.
        crate::group::Route::Unowned if operation == "delete" => {
            state.manager.delete(&name).await?;
            Ok(Some(json_reply(success(json!({})))))
        }
        crate::group::Route::Unowned => Err(ApiError::Unavailable(format!(
            "job {name} has no live owner at this moment: a member takes it over within {} s; \
             try again",
            (state.group.settings().lease + state.group.settings().heartbeat).as_secs()
        ))),
        crate::group::Route::Silent {
            member,
            quiet_ms,
            expires_in_ms,
        } => Err(ApiError::Unavailable(format!(
            "job {name} is owned by member {member}, which has not heartbeat for {quiet_ms} ms; \
             unless it comes back, another member takes the job over within {} ms; try again",
            expires_in_ms.max(0) + state.group.settings().heartbeat.as_millis() as i64
        ))),
        crate::group::Route::Forward { .. } if forwarded => Err(ApiError::Unavailable(format!(
            "job {name} is moving between members; try again"
        ))),
        crate::group::Route::Forward { member, address } => {
            debug!(operation, job = %name, %member, %address, "forwarding to the job's owner");
            admin::forward(
                &address,
                &member,
                state.peer_tls.as_ref(),
                operation,
                auth,
                body.clone(),
            )
            .await
            .map(Some)
        }
    }
}

/// The group as the status page shows it, from the group's last reading.
fn group_lines(group: &crate::group::Group) -> view::GroupLines<'_> {
    let v = group.view();
    let lease = group.settings().lease;
    let leader = v.leader();
    let members = v
        .members
        .iter()
        .map(|m| view::MemberLine {
            id: m.id.clone(),
            address: m.address.clone(),
            state: crate::group::member_state(m, v.now, lease),
            learner: m.member_type == crate::store::group::LEARNER,
            jobs_owned: v.jobs_owned(&m.id),
            leader: leader == Some(m.id.as_str()),
        })
        .collect();
    let elsewhere = v
        .leases
        .iter()
        .filter(|l| l.owner != group.member_id())
        .map(|l| view::ElsewhereLine {
            name: l.job.clone(),
            owner: l
                .held_at(v.now)
                .then(|| v.members.iter().find(|m| m.id == l.owner))
                .flatten()
                .map(|m| (m.id.clone(), m.address.clone())),
        })
        .collect();
    view::GroupLines {
        member_id: group.member_id(),
        members,
        elsewhere,
    }
}

fn json_reply(mut value: Value) -> Response {
    redact(&mut value);
    warp::reply::with_status(warp::reply::json(&value), StatusCode::OK).into_response()
}

/// Masks passwords in every string of an answer: errors and statements a
/// job quotes (see [`crate::redact`]).
fn redact(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(masked) = crate::redact::text(s) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => map.values_mut().for_each(redact),
        _ => {}
    }
}

fn require_post(operation: &str, method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            operation: operation.to_string(),
            allowed: "POST",
        })
    }
}

fn named(body: &[u8]) -> Result<String, ApiError> {
    let request: NameRequest = parse(body)?;
    non_empty_name(request.name)
}

fn non_empty_name(name: String) -> Result<String, ApiError> {
    if name.is_empty() {
        Err(ApiError::BadRequest("name is empty".into()))
    } else {
        Ok(name)
    }
}

async fn dispatch(
    state: &ApiState,
    operation: &str,
    method: &Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    let manager = &state.manager;
    match operation {
        "version" | "metrics" => return read_only(state, operation, method),
        op if !OPERATIONS.contains(&op) || op == "unknown" => {
            return Err(ApiError::UnknownOperation(operation.to_string()))
        }
        _ => require_post(operation, method)?,
    }
    debug!(operation, "request");
    let reply = match operation {
        "create_ccr" => {
            let spec = parse::<CreateRequest>(body)?.into_spec(&state.tls)?;
            let name = spec.name.clone();
            let owner = state.group.create(spec).await?;
            info!(job = %name, owner = ?owner, "create_ccr accepted");
            success(json!({"owner": owner}))
        }
        "list_jobs" => {
            parse::<EmptyRequest>(body)?;
            let jobs = state
                .group
                .job_names()
                .await
                .map_err(|e| ApiError::Job(e.into()))?;
            success(json!({"jobs": jobs}))
        }
        "job_status" => {
            success(json!({"status": responses::status(&manager.snapshot(&named(body)?)?)}))
        }
        "job_detail" => {
            success(json!({"job_detail": responses::detail(&manager.snapshot(&named(body)?)?)}))
        }
        "job_progress" => {
            success(json!({"job_progress": responses::progress(&manager.snapshot(&named(body)?)?)}))
        }
        "get_lag" => {
            let mut snap = manager.snapshot(&named(body)?)?;
            responses::source_head_now(&mut snap).await;
            success(responses::lag(&snap))
        }
        "pause" | "resume" | "desync" | "force_fullsync" => {
            let name = named(body)?;
            let command = match operation {
                "pause" => JobCommand::Pause,
                "resume" => JobCommand::Resume,
                "desync" => JobCommand::Desync,
                _ => JobCommand::FullSync {
                    reason: "force_fullsync requested".into(),
                },
            };
            manager.command(&name, command).await?;
            success(json!({}))
        }
        "delete" => {
            manager.delete(&named(body)?).await?;
            success(json!({}))
        }
        "update_host_mapping" | "add_host_mapping" => {
            let request: HostMappingRequest = parse(body)?;
            let name = non_empty_name(request.name)?;
            if request.src_host_mapping.is_none() && request.dest_host_mapping.is_none() {
                return Err(ApiError::BadRequest(
                    "give src_host_mapping, dest_host_mapping or both".into(),
                ));
            }
            manager
                .update_host_mapping(&name, request.src_host_mapping, request.dest_host_mapping)
                .await?;
            success(json!({}))
        }
        "update_tls" => update_tls(state, body).await?,
        "partial_sync" => {
            let request: PartialRequest = parse(body)?;
            let name = non_empty_name(request.name)?;
            let table = request.table.trim().to_string();
            if table.is_empty() {
                return Err(ApiError::BadRequest(
                    "table is empty: name the source table to copy again".into(),
                ));
            }
            manager
                .command(
                    &name,
                    JobCommand::PartialSync {
                        table,
                        reason: "partial_sync requested".into(),
                    },
                )
                .await?;
            success(json!({}))
        }
        "verify" => verify(manager, body).await?,
        "repair" => repair(manager, body).await?,
        "job_skip_binlog" => skip_binlog(manager, body).await?,
        _ => return Err(ApiError::UnknownOperation(operation.to_string())),
    };
    Ok(json_reply(reply))
}

/// `version` and `metrics`, which take GET as well as POST.
fn read_only(state: &ApiState, operation: &str, method: &Method) -> Result<Response, ApiError> {
    let manager = &state.manager;
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            operation: operation.to_string(),
            allowed: "GET and POST",
        });
    }
    if operation == "version" {
        return Ok(json_reply(success(
            json!({"version": env!("CARGO_PKG_VERSION")}),
        )));
    }
    // The lag as of this scrape, for every job: a paused or
    // retrying job's lag grows although nothing reports it.
    for name in manager.list() {
        if let Ok(job) = manager.snapshot(&name) {
            let lag = job.lag();
            state.metrics.set_lag(&name, lag.secs);
            state.metrics.set_stalled(&name, lag.stalled());
        }
    }
    Ok(warp::reply::with_header(
        state.metrics.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response())
}

async fn update_tls(state: &ApiState, body: &[u8]) -> Result<Value, ApiError> {
    let manager = &state.manager;
    let request: UpdateTlsRequest = parse(body)?;
    let name = non_empty_name(request.name)?;
    if request.src.is_none() && request.dest.is_none() {
        return Err(ApiError::BadRequest("give src, dest or both".into()));
    }
    let src = request
        .src
        .map(|t| t.into_options("src", &state.tls))
        .transpose()?;
    let dest = request
        .dest
        .map(|t| t.into_options("dest", &state.tls))
        .transpose()?;
    manager.update_tls(&name, src, dest).await?;
    Ok(success(json!({})))
}

async fn verify(manager: &JobManager, body: &[u8]) -> Result<Value, ApiError> {
    let request: VerifyRequest = parse(body)?;
    let name = non_empty_name(request.name)?;
    let tables: Vec<String> = request
        .tables
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.trim().to_string())
        .collect();
    if tables.iter().any(String::is_empty) {
        return Err(ApiError::BadRequest(
            "tables has an empty name: name source tables of the job, or leave tables out to compare them all".into(),
        ));
    }
    let job = manager
        .command(&name, JobCommand::Verify { tables })
        .await?;
    let tables: Vec<&str> = job
        .progress
        .verify
        .iter()
        .flat_map(|v| v.tables.iter().map(|t| t.table.as_str()))
        .collect();
    Ok(success(
        json!({"verify": {"state": "running", "tables": tables}}),
    ))
}

async fn repair(manager: &JobManager, body: &[u8]) -> Result<Value, ApiError> {
    let request: RepairRequest = parse(body)?;
    let name = non_empty_name(request.name)?;
    let table = request.table.trim().to_string();
    if table.is_empty() {
        return Err(ApiError::BadRequest(
            "table is empty: name the source table whose differing ranges to copy again".into(),
        ));
    }
    let job = manager
        .command(
            &name,
            JobCommand::Repair {
                table: table.clone(),
            },
        )
        .await?;
    let ranges = job
        .progress
        .verify
        .iter()
        .flat_map(|v| v.tables.iter())
        .find(|t| t.table == table)
        .and_then(|t| t.repair.as_ref())
        .map_or(0, |r| r.ranges_total);
    Ok(success(
        json!({"repair": {"table": table, "state": "running", "ranges": ranges}}),
    ))
}

async fn skip_binlog(manager: &JobManager, body: &[u8]) -> Result<Value, ApiError> {
    let request: SkipRequest = parse(body)?;
    let name = non_empty_name(request.name)?;
    let command = match (request.skip_by.as_str(), request.skip_commit_seq) {
        ("silence", Some(commit_seq)) => JobCommand::SkipTransaction { commit_seq },
        ("silence", None) => return Err(ApiError::BadRequest(
            "skip_by \"silence\" needs skip_commit_seq: the commit seq of the transaction to skip"
                .into(),
        )),
        ("fullsync", _) => JobCommand::FullSync {
            reason: "job_skip_binlog with skip_by fullsync".into(),
        },
        (other, _) => {
            return Err(ApiError::BadRequest(format!(
                "skip_by {other:?} is not \"silence\" or \"fullsync\""
            )))
        }
    };
    manager.command(&name, command).await?;
    Ok(success(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token() {
        let token = Secret::new("s3cret");
        assert!(authorize(None, None).is_ok());
        assert!(authorize(Some(&token), Some("Bearer s3cret")).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("s3cret"),
            Some("Bearer s3cret "),
        ] {
            assert!(authorize(Some(&token), bad).is_err(), "{bad:?}");
        }
    }
}
