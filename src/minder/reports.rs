//! A dbserver's `db_status_report`, whole or compact, and the reports a
//! receiver keeps.
//!
//! A report is whole (`params.report`) the first time it goes to a receiver
//! and whenever the node's state changed since the last whole report that
//! receiver acknowledged. Otherwise it is compact: `params.same` is the
//! `msg_id` of that whole report, and it carries only what moves under a
//! write load (`at`, `last_committed`). A receiver that does not hold that
//! whole report (it restarted, or the report was lost) answers `ack` with
//! `params.full = true`, and the dbserver sends the whole report at once.
//! So every message still states the current state, given the whole report
//! it names, and a lost or repeated one changes nothing.
//!
//! Both forms carry `params.config`, the digest of the site configuration
//! the dbserver reads from its own node: a receiver whose digest differs
//! reads the configuration at once, so parties across the WAN (the
//! arbitrator, a dbclient at a third site) need not poll it every interval.

use super::message::{next_id, Message, Party, Refused, Verb};
use super::rule::NodeReport;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A report as it is compared for "unchanged": everything but what moves
/// under a write load.
fn shape(r: &NodeReport) -> NodeReport {
    NodeReport {
        at: 0,
        last_committed: 0,
        ..r.clone()
    }
}

/// The dbserver's side: per receiver, the whole report it acknowledged.
#[derive(Debug, Default)]
pub struct Bases(HashMap<Party, (u64, NodeReport)>);

impl Bases {
    /// The message carrying `report` to `to`: compact when `to` acknowledged
    /// a whole report of the same shape.
    pub fn message(
        &self,
        from: Party,
        to: Party,
        node: &str,
        report: &NodeReport,
        config: Option<&str>,
    ) -> Message {
        let params = match self.0.get(&to) {
            Some((id, base)) if *base == shape(report) => json!({
                "same": id,
                "at": report.at,
                "last_committed": report.last_committed,
                "config": config,
            }),
            _ => json!({"node": node, "report": report, "config": config}),
        };
        Message {
            sender: from,
            receiver: to,
            verb: Verb::DbStatusReport,
            params,
            msg_id: next_id(),
        }
    }

    /// Takes the answer to `sent` (carrying `report`): whether the receiver
    /// asks for the whole report.
    pub fn answered(&mut self, sent: &Message, report: &NodeReport, answer: &Message) -> bool {
        if answer.params["full"] == json!(true) {
            self.0.remove(&sent.receiver);
            return true;
        }
        if sent.params.get("report").is_some() {
            self.0.insert(sent.receiver, (sent.msg_id, shape(report)));
        }
        false
    }
}

/// What a receiver did with a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Kept; `changed` when the node's state (not only its position) moved.
    Kept { changed: bool },
    /// Read before the one kept: older news, ignored.
    Older,
    /// A compact report naming a whole report this receiver does not hold.
    WantFull,
}

/// The reports a receiver keeps, by node name: the report and when it came.
#[derive(Debug, Default)]
pub struct Reports {
    kept: BTreeMap<String, (NodeReport, Instant)>,
    /// The `msg_id` of each node's last whole report.
    base: BTreeMap<String, u64>,
}

impl std::ops::Deref for Reports {
    type Target = BTreeMap<String, (NodeReport, Instant)>;

    fn deref(&self) -> &Self::Target {
        &self.kept
    }
}

impl Reports {
    /// Takes `m`, a `db_status_report` from `node`'s dbserver.
    pub fn take(&mut self, node: &str, m: &Message) -> Result<Taken, Refused> {
        let report = if let Some(whole) = m.params.get("report") {
            serde_json::from_value::<NodeReport>(whole.clone())
                .map_err(|e| Refused(format!("params.report: {e}")))?
        } else if let Some(same) = m.params.get("same") {
            let same = same
                .as_u64()
                .ok_or_else(|| Refused("params.same: not a msg_id".into()))?;
            let number = |key: &str| {
                m.params[key]
                    .as_i64()
                    .ok_or_else(|| Refused(format!("params.{key}: missing or not a number")))
            };
            let (at, last_committed) = (number("at")?, number("last_committed")?);
            match self.kept.get(node) {
                Some((r, _)) if self.base.get(node) == Some(&same) => NodeReport {
                    at,
                    last_committed,
                    ..r.clone()
                },
                _ => return Ok(Taken::WantFull),
            }
        } else {
            return Err(Refused(
                "params: a db_status_report carries `report` or `same`".into(),
            ));
        };
        if self.kept.get(node).is_some_and(|(r, _)| r.at > report.at) {
            return Ok(Taken::Older);
        }
        let changed = self.kept.get(node).is_none_or(|(r, _)| {
            (r.running, &r.cluster_status, &r.local_state, &r.members)
                != (
                    report.running,
                    &report.cluster_status,
                    &report.local_state,
                    &report.members,
                )
        });
        if m.params.get("report").is_some() {
            self.base.insert(node.to_string(), m.msg_id);
        }
        self.kept.insert(node.to_string(), (report, Instant::now()));
        Ok(Taken::Kept { changed })
    }
}

/// The answer to a report: `ack`, with `full: true` when the receiver wants
/// the whole report.
pub fn answer(m: &Message, me: Party, taken: &Taken) -> Message {
    let mut ack = m.ack(me);
    if *taken == Taken::WantFull {
        ack.params["full"] = Value::Bool(true);
    }
    ack
}

/// The configuration digest a report carries, if any.
pub fn config_digest(m: &Message) -> Option<&str> {
    m.params.get("config").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(s: &str) -> Party {
        s.parse().unwrap()
    }

    #[test]
    fn a_report_is_compact_once_acknowledged_and_whole_when_asked() {
        let (from, to) = (party("dbserver:1"), party("arbitrator:1"));
        let mut bases = Bases::default();
        let mut reports = Reports::default();
        let mut r = NodeReport {
            running: true,
            cluster_status: "Primary".into(),
            local_state: "Synced".into(),
            members: vec!["n1".into(), "n2".into()],
            last_committed: 5,
            at: 100,
            ..NodeReport::default()
        };
        let first = bases.message(from, to, "n1", &r, Some("d1"));
        assert!(first.params.get("report").is_some());
        let taken = reports.take("n1", &first).unwrap();
        assert_eq!(taken, Taken::Kept { changed: true });
        assert!(!bases.answered(&first, &r, &answer(&first, to, &taken)));
        // Only the position moved: compact, and the receiver fills it in.
        r.last_committed = 9;
        r.at = 200;
        let second = bases.message(from, to, "n1", &r, Some("d1"));
        assert!(second.params.get("report").is_none());
        assert!(second.to_string_len() < first.to_string_len());
        let taken = reports.take("n1", &second).unwrap();
        assert_eq!(taken, Taken::Kept { changed: false });
        assert_eq!(reports["n1"].0, r);
        assert_eq!(config_digest(&second), Some("d1"));
        // A receiver that lost the whole report asks for it.
        let mut fresh = Reports::default();
        let taken = fresh.take("n1", &second).unwrap();
        assert_eq!(taken, Taken::WantFull);
        assert!(bases.answered(&second, &r, &answer(&second, to, &taken)));
        assert!(bases
            .message(from, to, "n1", &r, None)
            .params
            .get("report")
            .is_some());
        // A state change is whole again.
        r.cluster_status = "non-Primary".into();
        let third = Bases::default().message(from, to, "n1", &r, None);
        assert_eq!(
            reports.take("n1", &third).unwrap(),
            Taken::Kept { changed: true }
        );
        // Older news is ignored; a report with neither form is refused.
        let mut old = third.clone();
        old.params["report"]["at"] = json!(1);
        assert_eq!(reports.take("n1", &old).unwrap(), Taken::Older);
        let mut bad = third;
        bad.params = json!({});
        assert!(reports.take("n1", &bad).is_err());
    }

    impl Message {
        fn to_string_len(&self) -> usize {
            serde_json::to_string(self).unwrap().len()
        }
    }
}
