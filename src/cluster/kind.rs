//! What a job type is: one [`Kind`] (its typed request read into a plan,
//! its steps as serde types, run, undo, its attachment, the resources it
//! holds, its point of no return). The engine sees kinds only through
//! [`AnyKind`], which turns the stored JSON into the kind's own types once
//! per call, so a kind never reads `plan["…"]` and a missing field is an
//! error naming it, never a silent `""`.
//!
//! Adding a job type: one file under `src/cluster/kinds/` implementing
//! [`Kind`], and one line in [`super::kinds::registry`].

use super::emit::{Envelope, Refused};
use super::resource::Resource;
use super::Env;
use crate::protocol::Progress;
use crate::store::cluster::Claims;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// How a step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// An agent or instance that did not answer, a timeout, a lost
    /// connection: retried with backoff up to `[cluster] step_retry_s`.
    Transient(String),
    /// Refused, invalid, impossible: the job undoes at once.
    Definite(String),
    /// This member no longer holds the job: it stops, undoing nothing.
    Lost(String),
}

impl StepError {
    pub fn message(&self) -> &str {
        match self {
            StepError::Transient(m) | StepError::Definite(m) | StepError::Lost(m) => m,
        }
    }

    pub fn definite(m: impl Into<String>) -> StepError {
        StepError::Definite(m.into())
    }

    pub fn transient(m: impl Into<String>) -> StepError {
        StepError::Transient(m.into())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl From<crate::store::StoreError> for StepError {
    /// The manager's own store not answering is an outage, not a verdict;
    /// a write refused by the fence stops the job here (the engine's next
    /// save is refused too), never undoes it.
    fn from(e: crate::store::StoreError) -> StepError {
        match e {
            crate::store::StoreError::Fenced { .. } => StepError::Lost(e.to_string()),
            e => StepError::Transient(format!("the manager's store: {e}")),
        }
    }
}

/// A step of a plan as the kind made it.
#[derive(Clone, Debug)]
pub struct PlannedStep<S> {
    pub step: S,
    /// Steps up to and including this one are not undone by a cancel or a
    /// later failure.
    pub no_return: bool,
}

/// A request read and checked: what the job will do, fixed now.
#[derive(Clone, Debug)]
pub struct Planned<P, S> {
    pub plan: P,
    pub steps: Vec<PlannedStep<S>>,
    /// What it holds while it runs: jobs whose resources overlap run one
    /// after the other, in the order accepted.
    pub resources: Vec<Resource>,
    /// Ports and ids the store hands out with the job, or refuses.
    pub claims: Claims,
    /// Said in the `accept` answer's `error_info` (a value raised to a
    /// minimum, …).
    pub note: String,
}

impl<P, S> Planned<P, S> {
    pub fn new(plan: P, steps: Vec<S>, resources: Vec<Resource>) -> Planned<P, S> {
        Planned {
            plan,
            steps: steps
                .into_iter()
                .map(|step| PlannedStep {
                    step,
                    no_return: false,
                })
                .collect(),
            resources,
            claims: Claims::default(),
            note: String::new(),
        }
    }
}

/// What a running step has: the manager's environment, its key for the
/// agents, and where it reports progress.
pub struct StepCtx<'a> {
    pub env: &'a Env,
    pub job_id: &'a str,
    /// The fence the job is driven under: every row a step writes is
    /// written under it ([`StepCtx::holder`]).
    pub fence: &'a crate::store::Fence,
    /// The step's label (`install:1:2`), part of its agent operations' key.
    pub label: &'a str,
    /// How many times the step was started.
    pub attempt: u64,
    pub progress: &'a ProgressCell,
    /// The results of the job's steps done so far, by label (what an
    /// earlier step chose, for a later one).
    pub earlier: &'a [(String, Value)],
}

impl StepCtx<'_> {
    /// The result of the done step labelled `label`.
    pub fn earlier(&self, label: &str) -> Option<&Value> {
        self.earlier
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v)
    }

    /// Who writes the step's rows: the job, under its fence.
    pub fn holder(&self) -> crate::store::cluster::Holder<'_> {
        crate::store::cluster::Holder {
            job_id: self.job_id,
            fence: self.fence,
        }
    }
}

/// The latest progress of a running step, and when it last moved.
#[derive(Default)]
pub struct ProgressCell {
    inner: parking_lot::Mutex<(Option<Progress>, Option<std::time::Instant>)>,
}

impl ProgressCell {
    /// Records `p`; it counts as progress when it differs from the last.
    pub fn report(&self, p: Progress) {
        let mut g = self.inner.lock();
        if g.0.as_ref() != Some(&p) {
            g.0 = Some(p);
            g.1 = Some(std::time::Instant::now());
        }
    }

    /// Marks that the step moved on without numbers (a sub-step ended).
    pub fn touch(&self) {
        self.inner.lock().1 = Some(std::time::Instant::now());
    }

    pub fn latest(&self) -> Option<Progress> {
        self.inner.lock().0.clone()
    }

    pub fn moved_at(&self) -> Option<std::time::Instant> {
        self.inner.lock().1
    }
}

/// A job type.
#[async_trait::async_trait]
pub trait Kind: Send + Sync + 'static {
    /// What the steps act on, fixed at accept.
    type Plan: Serialize + DeserializeOwned + Clone + Send + Sync;
    /// One step, with its arguments (`Install { shard, node }`).
    type Step: Serialize + DeserializeOwned + Clone + Send + Sync;

    /// The job type's name as requests carry it.
    fn name(&self) -> &'static str;

    /// Reads and checks the request into the plan; every check that needs
    /// the store or a server is made here, so that a refused request
    /// creates nothing.
    async fn plan(
        &self,
        env: &Env,
        e: &Envelope,
    ) -> Result<Planned<Self::Plan, Self::Step>, Refused>;

    /// The step's label, as `get_status` and metrics show it.
    fn label(&self, step: &Self::Step) -> String;

    /// Makes sure the step holds ("make sure X", safe to run again).
    async fn run(
        &self,
        ctx: &StepCtx<'_>,
        plan: &Self::Plan,
        step: &Self::Step,
    ) -> Result<Value, StepError>;

    /// Undoes a done step (cancel, or a later step failing).
    async fn undo(
        &self,
        _ctx: &StepCtx<'_>,
        _plan: &Self::Plan,
        _step: &Self::Step,
    ) -> Result<(), StepError> {
        Ok(())
    }

    /// After `step` is done: drops what the plan no longer needs (a secret
    /// kept only for that step).
    fn after(&self, _plan: &mut Self::Plan, _step: &Self::Step) {}

    /// The seed's attachment of the done job, from its plan and its steps'
    /// results.
    fn attachment(&self, plan: &Self::Plan, results: &[(Self::Step, Value)]) -> Value;

    /// The done job's `error_info`.
    fn done_info(&self) -> String;

    /// The plan as a dry run shows it (secrets removed).
    fn shown(&self, plan: &Self::Plan) -> Value {
        serde_json::to_value(plan).unwrap_or(Value::Null)
    }
}

/// A kind with its types erased to the stored JSON: what the engine and the
/// registry hold.
#[async_trait::async_trait]
pub trait AnyKind: Send + Sync {
    fn name(&self) -> &'static str;
    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Value, Value>, Refused>;
    fn label(&self, step: &Value) -> Result<String, String>;
    async fn run(&self, ctx: &StepCtx<'_>, plan: &Value, step: &Value) -> Result<Value, StepError>;
    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Value, step: &Value) -> Result<(), StepError>;
    fn after(&self, plan: &mut Value, step: &Value);
    fn attachment(&self, plan: &Value, results: &[(Value, Value)]) -> Result<Value, String>;
    fn done_info(&self) -> String;
    fn shown(&self, plan: &Value) -> Value;
}

/// A kind behind [`AnyKind`].
pub struct Erased<K>(pub K);

pub fn erased<K: Kind>(k: K) -> Arc<dyn AnyKind> {
    Arc::new(Erased(k))
}

fn read<T: DeserializeOwned>(what: &str, v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| {
        format!("the stored {what} cannot be read by this version ({e}): it is failed rather than guessed at")
    })
}

fn to_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("plans and steps serialize")
}

#[async_trait::async_trait]
impl<K: Kind> AnyKind for Erased<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Value, Value>, Refused> {
        let p = self.0.plan(env, e).await?;
        Ok(Planned {
            plan: to_json(&p.plan),
            steps: p
                .steps
                .iter()
                .map(|s| PlannedStep {
                    step: to_json(&s.step),
                    no_return: s.no_return,
                })
                .collect(),
            resources: p.resources,
            claims: p.claims,
            note: p.note,
        })
    }

    fn label(&self, step: &Value) -> Result<String, String> {
        Ok(self.0.label(&read("step", step)?))
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Value, step: &Value) -> Result<Value, StepError> {
        let plan: K::Plan = read("plan", plan).map_err(StepError::Definite)?;
        let step: K::Step = read("step", step).map_err(StepError::Definite)?;
        self.0.run(ctx, &plan, &step).await
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Value, step: &Value) -> Result<(), StepError> {
        let plan: K::Plan = read("plan", plan).map_err(StepError::Definite)?;
        let step: K::Step = read("step", step).map_err(StepError::Definite)?;
        self.0.undo(ctx, &plan, &step).await
    }

    fn after(&self, plan: &mut Value, step: &Value) {
        if let (Ok(mut p), Ok(s)) = (read::<K::Plan>("plan", plan), read::<K::Step>("step", step)) {
            self.0.after(&mut p, &s);
            *plan = to_json(&p);
        }
    }

    fn attachment(&self, plan: &Value, results: &[(Value, Value)]) -> Result<Value, String> {
        let plan: K::Plan = read("plan", plan)?;
        let results = results
            .iter()
            .map(|(s, r)| Ok((read::<K::Step>("step", s)?, r.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(self.0.attachment(&plan, &results))
    }

    fn done_info(&self) -> String {
        self.0.done_info()
    }

    fn shown(&self, plan: &Value) -> Value {
        match read::<K::Plan>("plan", plan) {
            Ok(p) => self.0.shown(&p),
            Err(_) => Value::Null,
        }
    }
}
