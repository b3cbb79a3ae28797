//! The group's admin API after seed 003: `GET /stat`, `POST /member/add`,
//! `POST /member/remove`, `POST /leadership/transfer`, `GET /config/get`,
//! `POST /config/set`; and forwarding a job's call to the member that owns
//! it (`forward`).

use super::responses::{success, time, ApiError};
use crate::client::{self, ClientError};
use crate::group::{member_state, Group, SWITCHES};
use crate::store::group::LEARNER;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// Marks a request one member sent another, so it is never sent on again.
pub const FORWARDED: &str = "x-ccr-forwarded";

/// `GET /stat`: the group as this member last saw it (at most one
/// heartbeat old).
pub async fn stat(group: &Group) -> Result<Value, ApiError> {
    let view = group.view();
    let lease = group.settings().lease;
    let me = group.member_id();
    let leader = view.leader().map(str::to_string);
    let host = |address: &str| {
        address
            .split_once("://")
            .map_or(address, |(_, rest)| rest)
            .to_string()
    };
    let leader_host = leader.as_ref().and_then(|id| {
        view.members
            .iter()
            .find(|m| &m.id == id)
            .map(|m| host(&m.address))
    });
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "address": m.address,
                "member_type": m.member_type,
                "learner": m.member_type == LEARNER,
                "state": member_state(m, view.now, lease),
                "last_heartbeat": (m.heartbeat_at > 0).then(|| time(m.heartbeat_at)),
                "heartbeat_age_ms": (m.heartbeat_at > 0).then(|| view.now - m.heartbeat_at),
                "jobs_owned": view.jobs_owned(&m.id),
                "leader": leader.as_deref() == Some(m.id.as_str()),
                "this_member": m.id == me,
            })
        })
        .collect();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &view.leases {
        *by_state.entry(l.run_state.as_str()).or_default() += 1;
    }
    let unowned = view.leases.iter().filter(|l| !l.held_at(view.now)).count();
    let owners: Map<String, Value> = view
        .leases
        .iter()
        .map(|l| {
            let owner = if l.held_at(view.now) {
                json!(l.owner)
            } else {
                Value::Null
            };
            (l.job.clone(), owner)
        })
        .collect();
    let switches: Map<String, Value> = group
        .switches()
        .into_iter()
        .map(|(key, on)| {
            (
                key.to_string(),
                json!(if on { "Enable" } else { "Disable" }),
            )
        })
        .collect();
    let raft_state = match (&leader, view.members.iter().find(|m| m.id == me)) {
        (Some(l), _) if l == me => "StateLeader",
        (_, Some(m)) if m.member_type == LEARNER => "StateLearner",
        _ => "StateFollower",
    };
    let peers: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "host": host(&m.address),
                "isLearner": m.member_type == LEARNER,
                "active": member_state(m, view.now, lease) == "alive",
            })
        })
        .collect();
    let lost: Vec<Value> = view
        .lost
        .iter()
        .map(|(job, epoch, at)| json!({"job": job, "epoch": epoch, "at": time(*at)}))
        .collect();
    Ok(success(json!({
        "leader_host": leader_host,
        "leader": leader,
        "term": view.leader.term,
        "read_only": view.read_only.is_some(),
        "read_only_reason": view.read_only,
        "member_id": me,
        "shared_store": group.shared(),
        "lease_ms": lease.as_millis() as u64,
        "members": members,
        "jobs": {"total": view.leases.len(), "unowned": unowned, "by_state": by_state,
                 "owners": owners},
        "jobs_lost": lost,
        "switches": switches,
        "raft_status": {
            "nodeId": me,
            "term": view.leader.term,
            "leader": leader,
            "raftState": raft_state,
            "peers": peers,
        },
    })))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

/// `peer_id`: a string, or a number as in the seed.
fn peer_id(map: &Map<String, Value>) -> Result<String, ApiError> {
    match map.get("peer_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(Value::String(_)) => Err(ApiError::BadRequest("peer_id is empty".into())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "peer_id must be a string or a non-negative integer, not {other}"
        ))),
        None => Err(ApiError::BadRequest(
            "peer_id is missing: name the member".into(),
        )),
    }
}

fn only(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "unknown field {k:?}; the fields are {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

pub async fn member_add(group: &Group, body: &[u8]) -> Result<Value, ApiError> {
    let map = object(body)?;
    only(&map, &["peer_id", "host", "member_type"])?;
    let id = peer_id(&map)?;
    let host = match map.get("host") {
        Some(Value::String(h)) => h.clone(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "host must be a string (host:port of the member's API), not {other}"
            )))
        }
        None => {
            return Err(ApiError::BadRequest(
                "host is missing: the member's API address, host:port".into(),
            ))
        }
    };
    let member_type = match map.get("member_type") {
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => s.parse().unwrap_or(0),
        None => 2,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "member_type must be 1 (learner) or 2 (normal), not {other}"
            )))
        }
    };
    group.add_member(&id, &host, member_type).await?;
    Ok(success(
        json!({"peer_id": id, "member_type": member_type, "state": "dead", "note": "the member joins when a syncer starts with this --member-id"}),
    ))
}

pub async fn member_remove(group: &Group, body: &[u8]) -> Result<Value, ApiError> {
    let map = object(body)?;
    only(&map, &["peer_id"])?;
    let id = peer_id(&map)?;
    let jobs = group.remove_member(&id).await?;
    Ok(success(
        json!({"peer_id": id, "state": "draining", "jobs_to_move": jobs}),
    ))
}

pub async fn leadership_transfer(group: &Group, body: &[u8]) -> Result<Value, ApiError> {
    let map = object(body)?;
    only(&map, &["peer_id"])?;
    let id = peer_id(&map)?;
    let term = group.transfer_leadership(&id).await?;
    Ok(success(json!({"leader": id, "term": term})))
}

pub async fn config_get(group: &Group, query: &str) -> Result<Value, ApiError> {
    let key = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "give the switch as /config/get?key=NAME; the switches are {}",
                SWITCHES.join(", ")
            ))
        })?;
    let value = group.switch(&key).await?;
    Ok(success(json!({"key": key, "value": value})))
}

pub async fn config_set(group: &Group, body: &[u8]) -> Result<Value, ApiError> {
    let map = object(body)?;
    only(&map, &["key", "value"])?;
    let field = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} must be a string, not {other}"
        ))),
        None => Err(ApiError::BadRequest(format!("{name} is missing"))),
    };
    let (key, value) = (field("key")?, field("value")?);
    group.set_switch(&key, &value).await?;
    Ok(success(json!({"key": key, "value": value})))
}

/// Sends a job's call on to the member that owns it and returns its answer
/// as it is.
pub async fn forward(
    address: &str,
    member: &str,
    peer_tls: Option<&tokio_rustls::TlsConnector>,
    operation: &str,
    auth: Option<&str>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut headers = vec![(FORWARDED, "1")];
    if let Some(auth) = auth {
        headers.push(("authorization", auth));
    }
    let path = format!("/{operation}");
    let answer = client::request(
        address,
        peer_tls,
        "POST",
        &path,
        &headers,
        body,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| match e {
        // An owner that cannot be reached may be gone: its lease runs out
        // and another member takes the job, so the caller can try again.
        ClientError::Connect(e) => ApiError::Unavailable(format!(
            "the job's owner, member {member} at {address}, cannot be reached ({e}); if it is \
             gone, another member takes the job over when its lease runs out; try again"
        )),
        ClientError::Exchange(e) => ApiError::Upstream(format!(
            "the job's owner, member {member} at {address}, did not answer: {e}"
        )),
    })?;
    Ok(warp::reply::with_status(
        warp::reply::with_header(answer.body.to_vec(), "content-type", answer.content_type),
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
    )
    .into_response())
}
