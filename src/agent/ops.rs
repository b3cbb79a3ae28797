//! The agent's long operations, keyed by (job, step, attempt) and kept in
//! `operations.json` in its state directory. The same request sent again
//! returns that operation's state instead of starting a second one; an
//! operation that was running when the agent died is reported
//! `interrupted` after its restart (its "make sure X holds" steps make a
//! new attempt safe).

pub use crate::protocol::Key;
use crate::protocol::{OpAnswer, OpStatus, Progress, VER};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn text(key: &Key) -> String {
    format!("{}/{}/{}", key.job_id, key.step, key.attempt)
}

/// How an operation failed; `retry` when the same operation sent again
/// may well succeed (a peer agent unreachable, a stream cut off): answered
/// with `error_code` 503, which the manager retries.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl Failure {
    pub fn retry(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            retry: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

/// An operation's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub key: Key,
    pub job_type: String,
    pub status: OpStatus,
    pub error_info: String,
    pub result: Value,
    #[serde(default)]
    pub progress: Progress,
    /// A failure worth sending again.
    #[serde(default)]
    pub retry: bool,
    pub started_at: i64,
    pub updated_at: i64,
}

impl Operation {
    /// The protocol's answer about it.
    pub fn answer(&self) -> OpAnswer {
        let failed = matches!(self.status, OpStatus::Failed | OpStatus::Interrupted);
        OpAnswer {
            ver: VER.into(),
            job_id: self.key.job_id.clone(),
            step: self.key.step.clone(),
            attempt: self.key.attempt,
            job_type: self.job_type.clone(),
            status: self.status,
            error_code: match (failed, self.retry) {
                (false, _) => "0",
                (true, true) => RETRY_CODE,
                (true, false) => "1",
            }
            .into(),
            error_info: self.error_info.clone(),
            result: self.result.clone(),
            progress: self.progress.clone(),
        }
    }
}

/// The `error_code` of a failure worth sending again.
pub const RETRY_CODE: &str = "503";

pub struct Operations {
    file: PathBuf,
    ops: Mutex<BTreeMap<String, Operation>>,
}

/// Operations kept: the newest this many.
const KEEP: usize = 1000;

impl Operations {
    /// Loads the kept operations; one still `ongoing` was cut off by the
    /// agent's death and is `interrupted` from now on.
    pub fn open(state_dir: &Path) -> Result<Operations, String> {
        let file = state_dir.join("operations.json");
        let mut ops: BTreeMap<String, Operation> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        for op in ops.values_mut() {
            if op.status == OpStatus::Ongoing {
                op.status = OpStatus::Interrupted;
                op.error_info =
                    "the agent stopped while this operation ran; send it again with the next attempt"
                        .into();
            }
        }
        let me = Operations {
            file,
            ops: Mutex::new(ops),
        };
        me.save(&me.ops.lock())?;
        Ok(me)
    }

    fn save(&self, ops: &BTreeMap<String, Operation>) -> Result<(), String> {
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(ops).expect("serializes"))
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| format!("{}: {e}", self.file.display()))
    }

    /// The operation under `key`, if one was started.
    pub fn get(&self, key: &Key) -> Option<Operation> {
        self.ops.lock().get(&text(key)).cloned()
    }

    /// The newest operation of `job_id`.
    pub fn latest(&self, job_id: &str) -> Option<Operation> {
        self.ops
            .lock()
            .values()
            .filter(|o| o.key.job_id == job_id)
            .max_by_key(|o| (o.started_at, o.key.attempt))
            .cloned()
    }

    /// Starts an operation under `key`: false when one exists already.
    pub fn begin(&self, key: &Key, job_type: &str) -> Result<bool, String> {
        let mut ops = self.ops.lock();
        if ops.contains_key(&text(key)) {
            return Ok(false);
        }
        let now = chrono::Utc::now().timestamp_millis();
        ops.insert(
            text(key),
            Operation {
                key: key.clone(),
                job_type: job_type.into(),
                status: OpStatus::Ongoing,
                error_info: String::new(),
                result: Value::Null,
                progress: Progress::default(),
                retry: false,
                started_at: now,
                updated_at: now,
            },
        );
        while ops.len() > KEEP {
            let oldest = ops
                .iter()
                .min_by_key(|(_, o)| o.updated_at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => ops.remove(&k),
                None => break,
            };
        }
        self.save(&ops)?;
        Ok(true)
    }

    /// Records how far the operation under `key` got (kept in memory: a
    /// restarted agent reports the operation interrupted anyway).
    pub fn progress(&self, key: &Key, progress: Progress) {
        if let Some(op) = self.ops.lock().get_mut(&text(key)) {
            op.progress = progress;
            op.updated_at = chrono::Utc::now().timestamp_millis();
        }
    }

    /// Records how the operation under `key` ended.
    pub fn finish(&self, key: &Key, outcome: Result<Value, Failure>) {
        let mut ops = self.ops.lock();
        if let Some(op) = ops.get_mut(&text(key)) {
            op.updated_at = chrono::Utc::now().timestamp_millis();
            match outcome {
                Ok(result) => {
                    op.status = OpStatus::Done;
                    op.result = result;
                }
                Err(e) => {
                    op.status = OpStatus::Failed;
                    op.error_info = e.message;
                    op.retry = e.retry;
                }
            }
        }
        if let Err(e) = self.save(&ops) {
            tracing::error!(error = %e, "cannot keep the agent's operations");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_runs_once_and_a_lost_operation_is_interrupted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let key = Key {
            job_id: "7".into(),
            step: "install".into(),
            attempt: 1,
        };
        let ops = Operations::open(&dir).unwrap();
        assert!(ops.begin(&key, "install_mysql").unwrap());
        assert!(!ops.begin(&key, "install_mysql").unwrap());
        assert_eq!(ops.get(&key).unwrap().status, OpStatus::Ongoing);
        drop(ops);
        let ops = Operations::open(&dir).unwrap();
        let op = ops.get(&key).unwrap();
        assert_eq!(op.status, OpStatus::Interrupted);
        let next = Key { attempt: 2, ..key };
        assert!(ops.begin(&next, "install_mysql").unwrap());
        ops.finish(&next, Ok(serde_json::json!({"port": 6001})));
        assert_eq!(ops.latest("7").unwrap().status, OpStatus::Done);
    }
}
