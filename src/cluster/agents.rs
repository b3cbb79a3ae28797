//! The manager's side of the node agents: one request to an agent, a keyed
//! operation followed to its end (its progress passed on to the step), and
//! the heartbeat that says which machines are online. Requests and answers
//! are the types of [`crate::protocol`].
//!
//! What counts as transient: an agent that cannot be reached, does not
//! answer in time or answers 5xx, and an operation the agent reports
//! `interrupted` (it restarted) or failed with `error_code` 503 (a peer
//! agent unreachable, a clone's stream cut off): the engine retries the
//! step. An agent that
//! refuses the request (4xx) or reports the operation failed is definite.

use super::kind::{StepCtx, StepError};
use crate::protocol::{Info, Key, OpAnswer, OpStatus, Request};
use crate::secret::Secret;
use crate::store::cluster::ClusterStore;
use crate::store::StoreError;
use serde_json::Value;
use std::time::Duration;

/// A machine whose agent answered within this is online.
pub const ONLINE_MS: i64 = 15_000;

/// How long one request to an agent may take (the agent answers an
/// operation's state within 2 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Agents {
    pub token: Option<Secret>,
    /// The agents' port unless a machine names another (9998 as in seed
    /// 000, or `[cluster] agent_port`).
    pub default_port: u16,
}

impl Agents {
    /// Sends `request` to the agent at `host:port`; its answer.
    pub async fn ask(&self, host: &str, port: i64, request: &Request) -> Result<Value, StepError> {
        let token = self.token.as_ref().ok_or_else(|| {
            StepError::definite(
                "the manager has no agent token: set CCR_AGENT_TOKEN to the agents' token",
            )
        })?;
        let answer = crate::client::to_agent(host, port, token, &request.body(), REQUEST_TIMEOUT)
            .await
        .map_err(|e| StepError::transient(format!(
            "the agent at {host}:{port} is unreachable ({e}): start `ccr-syncer agent --host {host} --port {port} --state-dir DIR` there"
        )))?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            StepError::transient(format!(
                "the agent at {host}:{port} answered {} without JSON",
                answer.status
            ))
        })?;
        let why = v["error_info"].as_str().unwrap_or("no reason given");
        match answer.status {
            200 if v["status"] != "failed" => Ok(v),
            // A failure the agent says is worth another try.
            500..=599 | 200 if v["error_code"] == "503" || answer.status >= 500 => {
                Err(StepError::transient(format!(
                    "the agent at {host}:{port} answered {}: {why}",
                    answer.status
                )))
            }
            status => Err(StepError::definite(format!(
                "the agent at {host}:{port} answered {status}: {why}"
            ))),
        }
    }

    /// `get_info`.
    pub async fn info(&self, host: &str, port: i64) -> Result<Info, StepError> {
        let v = self.ask(host, port, &Request::GetInfo).await?;
        serde_json::from_value(v).map_err(|e| {
            StepError::definite(format!("the agent at {host}:{port}: get_info answered {e}"))
        })
    }

    /// The key of a step's operation on an agent.
    pub fn key(ctx: &StepCtx<'_>, prefix: &str) -> Key {
        Key {
            job_id: ctx.job_id.to_string(),
            step: format!("{prefix}{}", ctx.label),
            attempt: ctx.attempt,
        }
    }

    /// Sends a keyed operation and follows it (the same request again
    /// answers its state) until it ends, passing its progress to the step.
    /// No cap on how long: the engine fails it when it stops progressing.
    pub async fn operate(
        &self,
        ctx: &StepCtx<'_>,
        host: &str,
        port: i64,
        request: Request,
    ) -> Result<Value, StepError> {
        loop {
            let v = self.ask(host, port, &request).await?;
            let a = OpAnswer::read(&v).map_err(StepError::Definite)?;
            ctx.progress.report(a.progress.clone());
            match a.status {
                OpStatus::Done => return Ok(a.result),
                OpStatus::Ongoing => continue,
                OpStatus::Interrupted => {
                    return Err(StepError::transient(format!(
                        "the agent at {host}:{port} restarted during the operation: {}",
                        a.error_info
                    )))
                }
                OpStatus::Failed if a.error_code == "503" => {
                    return Err(StepError::transient(format!(
                        "the agent at {host}:{port}: {}",
                        a.error_info
                    )))
                }
                OpStatus::Failed => {
                    return Err(StepError::definite(format!(
                        "the agent at {host}:{port}: {}",
                        a.error_info
                    )))
                }
            }
        }
    }

    /// One heartbeat round: asks every machine's agent at once (5 s at
    /// most), records who answered; how many did.
    pub async fn heartbeat(&self, store: &ClusterStore) -> Result<i64, StoreError> {
        let machines = store.machines().await?;
        let asks = machines.iter().map(|m| async move {
            let up = tokio::time::timeout(
                Duration::from_secs(5),
                self.ask(&m.hostaddr, m.agent_port, &Request::GetInfo),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            (m.hostaddr.clone(), up)
        });
        let mut up = 0;
        for (host, answered) in futures_util::future::join_all(asks).await {
            if answered {
                up += 1;
                store
                    .machine_seen(&host, chrono::Utc::now().timestamp_millis())
                    .await?;
            }
        }
        Ok(up)
    }
}
