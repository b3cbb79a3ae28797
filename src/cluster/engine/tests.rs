//! The engine against a job kind written for the test, on a real SQLite
//! store: crashes before, during and after each step, transient failures
//! retried then succeeding or running out, a definite failure undone, a
//! stall detected, a fenced save, as a table of cases.

use super::*;
use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{erased, Kind, Planned};
use crate::cluster::resource::Resource;
use crate::config::ClusterSettings;
use crate::store::cluster::Claims;
use parking_lot::Mutex;
use serde::Deserialize;
use std::sync::Arc;

/// What a test step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Act {
    Ok,
    /// Fails transiently this many times, then succeeds.
    Flaky(u64),
    /// Fails transiently every time.
    Down,
    Refused,
    /// Reports progress for a moment, then nothing, forever.
    Stalls,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TestStep {
    n: usize,
    act: Act,
}

/// The test kind: its steps as given; every run and undo logged.
struct TestKind {
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Kind for TestKind {
    type Plan = Vec<Act>;
    type Step = TestStep;

    fn name(&self) -> &'static str {
        "engine_test"
    }

    async fn plan(
        &self,
        _env: &Env,
        _e: &Envelope,
    ) -> Result<Planned<Vec<Act>, TestStep>, Refused> {
        unreachable!("the tests store their plans themselves")
    }

    fn label(&self, step: &TestStep) -> String {
        format!("s{}", step.n)
    }

    async fn run(
        &self,
        ctx: &StepCtx<'_>,
        _plan: &Vec<Act>,
        step: &TestStep,
    ) -> Result<Value, StepError> {
        let label = self.label(step);
        let runs = {
            let mut log = self.log.lock();
            log.push(format!("run {label}"));
            log.iter().filter(|l| **l == format!("run {label}")).count() as u64
        };
        match step.act {
            Act::Ok => Ok(serde_json::json!({"ran": label})),
            Act::Flaky(n) if runs > n => Ok(Value::Null),
            Act::Flaky(_) | Act::Down => Err(StepError::transient(format!("{label} is down"))),
            Act::Refused => Err(StepError::definite(format!("{label} refused"))),
            Act::Stalls => {
                ctx.progress.report(Progress {
                    done: 1,
                    total: Some(10),
                    phase: "copying".into(),
                });
                std::future::pending().await
            }
        }
    }

    async fn undo(
        &self,
        _ctx: &StepCtx<'_>,
        _plan: &Vec<Act>,
        step: &TestStep,
    ) -> Result<(), StepError> {
        self.log.lock().push(format!("undo {}", self.label(step)));
        Ok(())
    }

    fn attachment(&self, plan: &Vec<Act>, _results: &[(TestStep, Value)]) -> Value {
        serde_json::json!({"steps": plan.len()})
    }

    fn done_info(&self) -> String {
        "test done".into()
    }
}

#[derive(Default)]
struct Counts(Mutex<Vec<String>>);

impl Observer for Counts {
    fn step_done(&self, _job_type: &str, _step: &str, _took: Duration, _ok: bool) {}
    fn step_retried(&self, _job_type: &str, step: &str) {
        self.0.lock().push(step.to_string());
    }
}

struct Bench {
    _dir: tempfile::TempDir,
    env: Env,
    kind: Arc<dyn AnyKind>,
    log: Arc<Mutex<Vec<String>>>,
}

async fn bench(step_retry: Duration, stall: Duration) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn crate::store::MetaStore> = Arc::new(
        crate::store::SqliteStore::open(dir.path(), Arc::new(Default::default()))
            .await
            .unwrap(),
    );
    let group = crate::group::Group::alone(meta.clone()).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    Bench {
        _dir: dir,
        env: Env {
            store: ClusterStore::new(meta),
            agents: crate::cluster::agents::Agents {
                token: None,
                default_port: 9998,
            },
            group,
            storage: None,
            board: crate::cluster::comps::board::Board::new(&prometheus::Registry::new()),
            settings: ClusterSettings {
                step_retry,
                stall,
                ..Default::default()
            },
        },
        kind: erased(TestKind { log: log.clone() }),
        log,
    }
}

impl Bench {
    /// Stores a job of the test kind with these steps (the last `no_return`
    /// marks a point of no return at that index).
    async fn accept(&self, acts: &[Act], no_return: Option<usize>) -> String {
        let steps = acts
            .iter()
            .enumerate()
            .map(|(n, act)| {
                StepRecord::new(
                    format!("s{n}"),
                    serde_json::to_value(TestStep { n, act: *act }).unwrap(),
                    no_return == Some(n),
                )
            })
            .collect();
        let plan = StoredPlan {
            steps,
            details: serde_json::to_value(acts).unwrap(),
        };
        let row = JobRow {
            job_type: "engine_test".into(),
            status: "accept".into(),
            plan: serde_json::to_string(&plan).unwrap(),
            attachment: "null".into(),
            paras: "{}".into(),
            resource: Resource::Group.to_string(),
            ..Default::default()
        };
        self.env
            .store
            .accept(row, &Claims::default())
            .await
            .unwrap()
            .job_id
    }

    /// Claims the job as a manager starting would, and drives it.
    async fn drive(
        &self,
        id: &str,
        failpoint: &Failpoint,
        counts: &Counts,
    ) -> Result<Job, Stopped> {
        let row = self.env.store.job(id).await.unwrap().unwrap();
        let fence = self
            .env
            .store
            .claim(id, "m", row.owner_epoch)
            .await
            .unwrap()
            .unwrap();
        let job = Job::decode(row).unwrap();
        drive(&self.env, self.kind.as_ref(), job, fence, failpoint, counts).await
    }

    fn runs(&self, label: &str) -> usize {
        let want = format!("run {label}");
        self.log.lock().iter().filter(|l| **l == want).count()
    }
}

#[tokio::test]
async fn a_crash_before_during_or_after_each_step_resumes_to_done() {
    let b = bench(Duration::from_secs(30), Duration::from_secs(60)).await;
    for step in ["s0", "s1", "s2"] {
        for when in ["before", "during", "after"] {
            b.log.lock().clear();
            let id = b.accept(&[Act::Ok, Act::Ok, Act::Ok], None).await;
            let point = format!("{when}:{step}");
            let fp = Failpoint {
                point: Some(point.clone()),
                abort: false,
            };
            let counts = Counts::default();
            let stopped = b.drive(&id, &fp, &counts).await;
            assert!(
                matches!(stopped, Err(Stopped::Failpoint(ref p)) if *p == point),
                "{point}"
            );
            let job = b.drive(&id, &Failpoint::default(), &counts).await.unwrap();
            assert_eq!(job.status, Status::Done, "{point}");
            assert_eq!(job.attachment["steps"], 3, "{point}");
            for s in ["s0", "s1", "s2"] {
                // Every step ran through once: one done before the crash
                // is not run again, one saved as running but cut off
                // before it ran is run on resume.
                assert_eq!(b.runs(s), 1, "{point}: {s}");
            }
            let retried = counts.0.lock().clone();
            let expect: Vec<String> = if when == "during" {
                vec![step.to_string()]
            } else {
                vec![]
            };
            assert_eq!(retried, expect, "{point}");
        }
    }
}

#[tokio::test]
async fn failures_as_a_table_of_cases() {
    struct Case {
        acts: &'static [Act],
        no_return: Option<usize>,
        status: Status,
        code: &'static str,
        info: &'static [&'static str],
        log: &'static [&'static str],
    }
    let cases = [
        // Transient failures retried (1 s, 2 s), then through.
        Case {
            acts: &[Act::Ok, Act::Flaky(2), Act::Ok],
            no_return: None,
            status: Status::Done,
            code: "0",
            info: &["test done"],
            log: &["run s0", "run s1", "run s1", "run s1", "run s2"],
        },
        // Definite: undone at once, newest first.
        Case {
            acts: &[Act::Ok, Act::Ok, Act::Refused],
            no_return: None,
            status: Status::Failed,
            code: codes::STEP_FAILED,
            info: &["step s2 failed: s2 refused", "undone: s1, s0"],
            log: &["run s0", "run s1", "run s2", "undo s1", "undo s0"],
        },
        // Past the point of no return: what is before it is kept.
        Case {
            acts: &[Act::Ok, Act::Ok, Act::Refused],
            no_return: Some(0),
            status: Status::Failed,
            code: codes::STEP_FAILED,
            info: &["undone: s1", "point of no return at s0"],
            log: &["run s0", "run s1", "run s2", "undo s1"],
        },
        // Transient for longer than step_retry_s: failed and undone.
        Case {
            acts: &[Act::Ok, Act::Down],
            no_return: None,
            status: Status::Failed,
            code: codes::STEP_FAILED,
            info: &["step s1 failed: s1 is down (retried", "undone: s0"],
            log: &["run s0", "run s1", "run s1", "run s1", "undo s0"],
        },
        // No progress for stall_s: failed, naming where it stuck.
        Case {
            acts: &[Act::Ok, Act::Stalls],
            no_return: None,
            status: Status::Failed,
            code: codes::STEP_FAILED,
            info: &[
                "no progress for",
                "stuck at 1 of Some(10) (copying)",
                "undone: s0",
            ],
            log: &["run s0", "run s1", "undo s0"],
        },
    ];
    let b = bench(Duration::from_millis(2500), Duration::from_secs(2)).await;
    for (i, c) in cases.iter().enumerate() {
        b.log.lock().clear();
        let id = b.accept(c.acts, c.no_return).await;
        let job = b
            .drive(&id, &Failpoint::default(), &Counts::default())
            .await
            .unwrap();
        assert_eq!(job.status, c.status, "case {i}: {}", job.row.error_info);
        assert_eq!(job.row.error_code, c.code, "case {i}");
        for needle in c.info {
            assert!(
                job.row.error_info.contains(needle),
                "case {i}: {needle:?} in {}",
                job.row.error_info
            );
        }
        assert_eq!(*b.log.lock(), c.log, "case {i}");
        // What get_status reads is what the engine saved.
        let stored = Job::decode(b.env.store.job(&id).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.status, c.status, "case {i}");
    }
}

#[tokio::test]
async fn retries_are_saved_while_they_go_on_and_a_cancel_stops_them() {
    let b = bench(Duration::from_secs(60), Duration::from_secs(60)).await;
    let id = b.accept(&[Act::Ok, Act::Down], None).await;
    let env = &b.env;
    let watch = async {
        loop {
            let row = env.store.job(&id).await.unwrap().unwrap();
            let job = Job::decode(row).unwrap();
            let s1 = &job.plan.steps[1];
            if s1.retries >= 2 {
                assert!(s1.last_error.contains("s1 is down"), "{s1:?}");
                assert_eq!(job.status, Status::Ongoing);
                env.store.request_cancel(&id).await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (fp, counts) = (Failpoint::default(), Counts::default());
    let (job, ()) = tokio::join!(b.drive(&id, &fp, &counts), watch);
    let job = job.unwrap();
    assert_eq!(job.status, Status::Failed);
    assert_eq!(
        job.row.error_code,
        codes::CANCELLED,
        "{}",
        job.row.error_info
    );
}

#[tokio::test]
async fn a_member_that_lost_the_job_saves_nothing_more() {
    let b = bench(Duration::from_secs(60), Duration::from_secs(60)).await;
    let id = b.accept(&[Act::Ok, Act::Ok], None).await;
    let row = b.env.store.job(&id).await.unwrap().unwrap();
    let old = b
        .env
        .store
        .claim(&id, "m1", row.owner_epoch)
        .await
        .unwrap()
        .unwrap();
    // Another member claims it meanwhile (the first was frozen).
    let new = b
        .env
        .store
        .claim(&id, "m2", old.epoch)
        .await
        .unwrap()
        .unwrap();
    let job = Job::decode(row).unwrap();
    let stopped = drive(
        &b.env,
        b.kind.as_ref(),
        job,
        old,
        &Failpoint::default(),
        &Counts::default(),
    )
    .await;
    assert!(
        matches!(stopped, Err(Stopped::Store(StoreError::Fenced { .. }))),
        "{stopped:?}"
    );
    let row = b.env.store.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.owner.as_str(), row.owner_epoch),
        ("accept", "m2", new.epoch)
    );
    assert_eq!(b.runs("s0"), 0, "nothing ran under the lost fence");
}

#[test]
fn backoff_doubles_up_to_thirty_seconds() {
    let secs: Vec<u64> = (1..=8).map(|r| backoff(r).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
}

#[test]
fn unknown_statuses_and_plans_are_refused_by_name() {
    let row = JobRow {
        job_id: "9".into(),
        status: "paused".into(),
        plan: "{}".into(),
        ..Default::default()
    };
    assert!(Job::decode(row.clone()).unwrap_err().contains("\"paused\""));
    let bad_state = JobRow {
        status: "ongoing".into(),
        plan: r#"{"steps":[{"name":"s0","state":"exploded","step":{}}],"details":null}"#.into(),
        ..row
    };
    assert!(Job::decode(bad_state).unwrap_err().contains("exploded"));
}
