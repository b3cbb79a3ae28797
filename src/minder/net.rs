//! Sending and receiving minder messages over HTTP: `POST /minder` with the
//! message as JSON; the answer is the acknowledgement or the reply. A bad
//! message gets a 4xx with a plain-text reason and changes nothing.

use super::message::{Message, Party, Refused};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;

/// The largest message accepted.
const BODY_LIMIT: u64 = 256 << 10;

/// Why a message got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Nobody answered: worth sending again.
    #[error("{0}")]
    Unanswered(String),
    /// The receiver refused it: sending it again changes nothing.
    #[error("{0}")]
    Refused(String),
}

/// Sends `m` to `address` (`host:port`) and returns the answer.
pub async fn send(address: &str, m: &Message, timeout: Duration) -> Result<Message, SendError> {
    let body = Bytes::from(serde_json::to_vec(m).expect("a message serializes"));
    let answer = crate::client::request_kept(address, "/minder", body, timeout)
        .await
        .map_err(|e| {
            SendError::Unanswered(format!(
                "{} to {} at {address}: {e}",
                m.verb.as_str(),
                m.receiver
            ))
        })?;
    if answer.status != 200 {
        return Err(SendError::Refused(format!(
            "{} to {} at {address}: refused ({}): {}",
            m.verb.as_str(),
            m.receiver,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )));
    }
    Message::parse(&answer.body).map_err(|e| SendError::Refused(format!("{address} answered: {e}")))
}

/// Sends `m` again every `every` until it is answered (or refused), or
/// `attempts` go unanswered.
pub async fn send_until_answered(
    address: &str,
    m: &Message,
    every: Duration,
    attempts: u32,
) -> Result<Message, SendError> {
    let mut last = SendError::Unanswered(format!("{address}: not sent"));
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(every).await;
        }
        match send(address, m, every).await {
            Ok(answer) => return Ok(answer),
            Err(e @ SendError::Refused(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What a party does with the messages it receives.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Who this party is.
    fn me(&self) -> Party;
    /// Checks the sender and the verb (a party not in the configuration, a
    /// verb this party does not take): refused before anything changes.
    fn admit(&self, m: &Message, peer: SocketAddr) -> Result<(), Refused>;
    /// Takes a message (already known newer than the sender's last) and
    /// returns the answer.
    async fn handle(&self, m: Message, peer: SocketAddr) -> Result<Message, Refused>;
    /// The text of `GET /metrics`, where the party has metrics.
    fn metrics(&self) -> Option<String> {
        None
    }
}

/// A reply of `text` with no headers but the ones HTTP needs.
fn plain(status: warp::http::StatusCode, text: String) -> warp::http::Response<String> {
    let mut reply = warp::http::Response::new(text);
    *reply.status_mut() = status;
    reply
}

/// Serves `handler` at `address` until `stop` resolves.
pub async fn serve(
    address: SocketAddr,
    handler: Arc<dyn Handler>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let seen = Arc::new(tokio::sync::Mutex::new(super::message::Seen::default()));
    let h = handler.clone();
    let minder = warp::post()
        .and(warp::path("minder"))
        .and(warp::path::end())
        .and(warp::body::content_length_limit(BODY_LIMIT))
        .and(warp::body::bytes())
        .and(warp::addr::remote())
        .then(move |body: Bytes, peer: Option<SocketAddr>| {
            let (h, seen) = (h.clone(), seen.clone());
            let reply: std::pin::Pin<
                Box<dyn std::future::Future<Output = warp::http::Response<String>> + Send>,
            > = Box::pin(async move {
                let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                // The answer goes without a content-type header: every byte
                // of a report's answer crosses the WAN each interval.
                let (status, text) = match answer(h, seen, body, peer).await {
                    Ok(m) => (
                        warp::http::StatusCode::OK,
                        serde_json::to_string(&m).expect("a message serializes"),
                    ),
                    Err((status, e)) => (status, e.0),
                };
                plain(status, text)
            });
            reply
        });
    let h = handler.clone();
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(move || match h.metrics() {
            Some(text) => plain(warp::http::StatusCode::OK, text),
            None => plain(
                warp::http::StatusCode::NOT_FOUND,
                "this party has no metrics".to_string(),
            ),
        });
    let routes = minder
        .or(metrics)
        .unify()
        .or(warp::any().map(|| {
            plain(
                warp::http::StatusCode::NOT_FOUND,
                "the minder takes POST /minder (and GET /metrics on the arbitrator)".to_string(),
            )
        }))
        .unify();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    warp::serve(routes)
        .incoming(listener)
        .graceful(stop)
        .run()
        .await;
    Ok(())
}

async fn answer(
    h: Arc<dyn Handler>,
    seen: Arc<tokio::sync::Mutex<super::message::Seen>>,
    body: Bytes,
    peer: SocketAddr,
) -> Result<Message, (warp::http::StatusCode, Refused)> {
    use warp::http::StatusCode;
    let m = Message::parse(&body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let me = h.me();
    if m.receiver.kind != me.kind || (m.receiver.serial != me.serial && m.receiver.serial != 0) {
        return Err((
            StatusCode::BAD_REQUEST,
            Refused(format!("this is {me}, not {}", m.receiver)),
        ));
    }
    h.admit(&m, peer).map_err(|e| (StatusCode::FORBIDDEN, e))?;
    // Older than the last taken from this sender, or the same one again:
    // taken already; acknowledged so that the sender stops resending.
    // A query (`status_summary`) changes nothing and is always answered:
    // several processes ask as `command:0`, each with its own clock.
    let query = m.verb == super::message::Verb::StatusSummary
        && me.kind == super::message::Kind::Arbitrator;
    if !query && !seen.lock().await.is_newer(&m) {
        return Ok(m.ack(me));
    }
    let (sender, id) = (m.sender, m.msg_id);
    let answer = h
        .handle(m, peer)
        .await
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
    // Taken: a refused message is not (its sender may correct it).
    if !query {
        seen.lock().await.taken(sender, id);
    }
    Ok(answer)
}
