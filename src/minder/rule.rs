//! The arbitrator's decision rule: which component of a split Galera
//! cluster, if any, is made Primary (`pc.bootstrap=YES` on one of its
//! nodes). Pure: it reads the latest report of every node and what the
//! arbitrator decided before, and says what to do and why.
//!
//! ## Why two Primary components never exist
//!
//! Galera itself never lets two components be Primary at once *by quorum*:
//! a component is Primary only while it holds a majority of the last
//! Primary view. The one way to get two is a bootstrap, so the rule must
//! never bootstrap a component while another one may be Primary or may
//! become Primary. It bootstraps component C only when all of these hold:
//!
//! 1. **No reachable node reports Primary, and none has for `confirm_s`.**
//!    A Primary reachable component means there is nothing to do; waiting
//!    `confirm_s` lets a component that just regained quorum say so.
//! 2. **The rest cannot hold a majority.** Either C holds at least half of
//!    the last Primary view's members (so the others hold at most half:
//!    never a majority, so Galera never makes them Primary by quorum), or
//!    every node outside C is known down (its dbserver reports `mariadbd`
//!    not running). Members are counted by name, never by size, and the
//!    last Primary view is the membership a Primary node *reported*, so a
//!    stale report of one half cannot shrink it.
//! 3. **No component that could be Primary by a bootstrap of ours.** Once
//!    the arbitrator has promoted C, a component holding none of C's members
//!    is not promoted while any of C's members is merely unreachable (its
//!    reports stopped): C may be Primary behind a cut. Only when every
//!    member of C is known down is the other side promoted. (A component
//!    sharing a member with C cannot be a second Primary beside C: Galera
//!    puts a node in one component only.) The promotions are kept in the
//!    arbitrator's state directory, so a restarted arbitrator knows them.
//! 4. **Nothing newer elsewhere.** A component whose last committed seqno is
//!    below another reachable component's is not promoted (it would lose
//!    what the other committed).
//! 5. **A settled membership.** Every running node that reports has reported
//!    the same component (members and cluster status) for `confirm_s`.
//!    While a cut heals, Galera's own reconfiguration passes through short
//!    memberships (a node alone, non-Primary, for a second or more) that
//!    would pass (2) for a node of the last Primary view's half; promoting
//!    one would be needless (Galera is about to form a Primary of its own),
//!    so the rule waits until the memberships stop moving. This check only
//!    ever delays a promotion, so it cannot weaken (1)–(4). The times are
//!    not kept across a restart: a restarted arbitrator waits `confirm_s`
//!    from its first reports.
//!
//! With two data centres of two nodes and the link between them cut, both
//! halves hold exactly half of the last Primary view, so both pass (2); the
//! first promotion (the `primary_dc`'s half, by the candidate order) makes
//! the other fail (3) for as long as the promoted half is not known down,
//! and (1) for as long as it reports Primary. An operator's `force_primary`
//! overrides (2)–(4), never (1), and is logged as an override.
//!
//! One promotion per `hold_s` keeps a flapping link from bootstrapping back
//! and forth; the writer is chosen by [`writer`], which keeps a healthy
//! writer where it is (no failback).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node's latest report, as the arbitrator keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Whether `mariadbd` runs (as its dbserver sees it).
    pub running: bool,
    /// `wsrep_cluster_status`: `Primary`, `non-Primary`, `Disconnected`.
    pub cluster_status: String,
    /// `wsrep_local_state_comment`: `Synced`, `Donor/Desynced`, `Joining` …
    pub local_state: String,
    pub cluster_size: u64,
    pub state_uuid: String,
    pub conf_id: i64,
    pub last_committed: i64,
    /// The names of the members of its component, itself included.
    pub members: Vec<String>,
    /// Unix milliseconds the dbserver read it at.
    pub at: i64,
}

impl NodeReport {
    pub fn is_primary(&self) -> bool {
        self.running && self.cluster_status == "Primary"
    }
}

/// What the arbitrator knows of a node now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Its dbserver's report is fresh.
    Reported(NodeReport),
    /// Its reports stopped (or never came): not down, unknown.
    Unreachable,
}

impl Seen {
    pub fn report(&self) -> Option<&NodeReport> {
        match self {
            Seen::Reported(r) => Some(r),
            Seen::Unreachable => None,
        }
    }

    /// Known down: its dbserver reports that `mariadbd` does not run.
    fn is_down(&self) -> bool {
        matches!(self, Seen::Reported(r) if !r.running)
    }
}

/// A promotion the arbitrator made (or an operator forced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub epoch: u64,
    /// The members of the component promoted.
    pub component: Vec<String>,
    /// The node `set_primary` went to.
    pub node: String,
    pub at: i64,
    pub reason: String,
    #[serde(default)]
    pub forced: bool,
}

/// What the arbitrator remembers between decisions (kept in its state dir).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The membership a Primary node last reported.
    pub last_primary_view: Vec<String>,
    /// When a node last reported Primary (unix ms).
    pub primary_seen_at: Option<i64>,
    /// Every promotion, oldest first.
    pub promotions: Vec<Promotion>,
    /// Each reporting node's component as it last reported it, and when that
    /// last changed (unix ms): not kept across a restart.
    #[serde(skip)]
    pub membership: BTreeMap<String, (Membership, i64)>,
}

/// What a node reports of its component: its cluster status and members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub cluster_status: String,
    pub members: Vec<String>,
}

impl Membership {
    fn of(r: &NodeReport) -> Membership {
        let mut members = r.members.clone();
        members.sort();
        Membership {
            cluster_status: if r.running {
                r.cluster_status.clone()
            } else {
                "not running".into()
            },
            members,
        }
    }
}

impl Memory {
    pub fn epoch(&self) -> u64 {
        self.promotions.last().map_or(0, |p| p.epoch)
    }
}

/// The site's settings the rule needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub primary_dc: String,
    pub confirm_ms: i64,
    pub hold_ms: i64,
    /// Each node's data centre, by name: every node of the config.
    pub dcs: BTreeMap<String, String>,
}

/// The rule's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is a Primary component: nothing to do.
    Healthy { primary: Vec<String> },
    /// No promotion now, and why.
    Wait(String),
    /// Send `set_primary` to `node`, making its component Primary.
    Promote {
        node: String,
        component: Vec<String>,
        reason: String,
    },
}

/// Reads the reports into `memory` (the last Primary view, when a node was
/// last Primary): call before [`decide`] on every round.
pub fn observe(memory: &mut Memory, nodes: &BTreeMap<String, Seen>, now: i64) {
    for (name, seen) in nodes {
        if let Some(r) = seen.report() {
            let m = Membership::of(r);
            if memory.membership.get(name).map(|(was, _)| was) != Some(&m) {
                memory.membership.insert(name.clone(), (m, now));
            }
        }
    }
    // The largest membership a Primary node reports (the halves' reports
    // arrive at different moments; a Primary node reports its whole view).
    let primary = nodes
        .values()
        .filter_map(Seen::report)
        .filter(|r| r.is_primary())
        .max_by_key(|r| (r.members.len(), r.conf_id));
    if let Some(r) = primary {
        let mut view = r.members.clone();
        view.sort();
        memory.last_primary_view = view;
        memory.primary_seen_at = Some(now);
    }
}

/// A set of nodes reporting the same non-Primary membership.
#[derive(Clone, Debug)]
struct Component {
    members: BTreeSet<String>,
    /// The members that reported it (running, non-Primary).
    reporters: Vec<String>,
    last_committed: i64,
}

fn components(nodes: &BTreeMap<String, Seen>) -> Vec<Component> {
    let mut by_members: BTreeMap<Vec<String>, Component> = BTreeMap::new();
    for (name, seen) in nodes {
        let Some(r) = seen.report().filter(|r| r.running && !r.is_primary()) else {
            continue;
        };
        let mut members: Vec<String> = r.members.clone();
        if !members.contains(name) {
            members.push(name.clone());
        }
        members.sort();
        let c = by_members.entry(members.clone()).or_insert(Component {
            members: members.into_iter().collect(),
            reporters: Vec::new(),
            last_committed: i64::MIN,
        });
        c.reporters.push(name.clone());
        c.last_committed = c.last_committed.max(r.last_committed);
    }
    by_members.into_values().collect()
}

/// Decides, without I/O, what to do now. `forced`: an operator's
/// `force_primary NODE`, which overrides every check but "no Primary".
pub fn decide(
    settings: &Settings,
    memory: &Memory,
    nodes: &BTreeMap<String, Seen>,
    now: i64,
    forced: Option<&str>,
) -> Decision {
    // 1. A Primary component is never touched.
    let primaries: Vec<&NodeReport> = nodes
        .values()
        .filter_map(Seen::report)
        .filter(|r| r.is_primary())
        .collect();
    if let Some(r) = primaries.iter().max_by_key(|r| r.members.len()) {
        let mut primary = r.members.clone();
        primary.sort();
        return Decision::Healthy { primary };
    }
    let comps = components(nodes);
    if let Some(node) = forced {
        return match comps.iter().find(|c| c.reporters.iter().any(|r| r == node)) {
            Some(c) => Decision::Promote {
                node: node.to_string(),
                component: c.members.iter().cloned().collect(),
                reason: format!("forced by an operator (force_primary {node}): the safety checks were overridden"),
            },
            None => Decision::Wait(format!(
                "force_primary {node}: {node} is not running and reporting a non-Primary component"
            )),
        };
    }
    if let Some(seen) = memory.primary_seen_at {
        if now - seen < settings.confirm_ms {
            return Decision::Wait(format!(
                "a node reported Primary {} ms ago: confirming for {} ms",
                now - seen,
                settings.confirm_ms
            ));
        }
    }
    if let Some(last) = memory.promotions.last() {
        if now - last.at < settings.hold_ms {
            return Decision::Wait(format!(
                "promoted {} {} ms ago: one promotion per {} ms",
                last.node,
                now - last.at,
                settings.hold_ms
            ));
        }
    }
    if comps.is_empty() {
        return Decision::Wait("no running node reports a component".into());
    }
    // 5. The memberships have settled.
    let moving: Vec<String> = nodes
        .iter()
        .filter(|(_, seen)| seen.report().is_some_and(|r| r.running))
        .filter_map(|(name, _)| match memory.membership.get(name) {
            Some((_, since)) if now - since >= settings.confirm_ms => None,
            Some((_, since)) => Some(format!("{name} ({} ms ago)", now - since)),
            None => Some(format!("{name} (not yet observed)")),
        })
        .collect();
    if !moving.is_empty() {
        return Decision::Wait(format!(
            "the membership changed lately on {}: confirming for {} ms",
            moving.join(", "),
            settings.confirm_ms
        ));
    }
    let view: BTreeSet<&String> = memory.last_primary_view.iter().collect();
    let mut why_not = Vec::new();
    let mut candidates = Vec::new();
    for c in &comps {
        match eligible(c, &comps, &view, memory, nodes) {
            Ok(reason) => candidates.push((c, reason)),
            Err(why) => why_not.push(format!(
                "{{{}}}: {why}",
                c.members.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    // The primary DC first, then the newest, then the largest.
    let in_primary_dc = |c: &Component| {
        c.members
            .iter()
            .any(|m| settings.dcs.get(m) == Some(&settings.primary_dc))
    };
    candidates.sort_by_key(|(c, _)| {
        (
            std::cmp::Reverse(in_primary_dc(c)),
            std::cmp::Reverse(c.last_committed),
            std::cmp::Reverse(c.members.len()),
        )
    });
    match candidates.first() {
        Some((c, reason)) => {
            // Its reporter that has committed the most.
            let node = c.reporters.iter().min_by_key(|r| {
                std::cmp::Reverse(
                    nodes[*r]
                        .report()
                        .map_or(i64::MIN, |rep| rep.last_committed),
                )
            });
            Decision::Promote {
                node: node.cloned().unwrap_or_default(),
                component: c.members.iter().cloned().collect(),
                reason: reason.clone(),
            }
        }
        None => Decision::Wait(format!(
            "no component may be promoted: {}",
            why_not.join("; ")
        )),
    }
}

/// Whether component `c` may be promoted: the reason, or why not.
fn eligible(
    c: &Component,
    all: &[Component],
    view: &BTreeSet<&String>,
    memory: &Memory,
    nodes: &BTreeMap<String, Seen>,
) -> Result<String, String> {
    let outside: Vec<&String> = nodes.keys().filter(|n| !c.members.contains(*n)).collect();
    let outside_down = outside.iter().all(|n| nodes[*n].is_down());
    // 3. After a promotion, not the other side while the promoted one may
    // be Primary behind a cut.
    if let Some(last) = memory.promotions.last() {
        let shares = last.component.iter().any(|m| c.members.contains(m));
        if !shares {
            let not_down: Vec<&String> = last
                .component
                .iter()
                .filter(|m| !nodes.get(*m).is_some_and(Seen::is_down))
                .collect();
            if !not_down.is_empty() {
                return Err(format!(
                    "holds none of the component promoted last ({}), whose {} not known down",
                    last.component.join(", "),
                    not_down
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if not_down.len() == 1 { " is" } else { " are" }
                ));
            }
        }
    }
    // 4. Nothing newer in another reachable component.
    if let Some(newer) = all
        .iter()
        .filter(|o| o.members != c.members)
        .find(|o| o.last_committed > c.last_committed)
    {
        return Err(format!(
            "behind {{{}}} (last committed {} < {})",
            newer.members.iter().cloned().collect::<Vec<_>>().join(", "),
            c.last_committed,
            newer.last_committed
        ));
    }
    // 2. The rest cannot hold a majority.
    let held = c.members.iter().filter(|m| view.contains(m)).count();
    if !view.is_empty() && held * 2 >= view.len() {
        return Ok(format!(
            "holds {held} of the {} members of the last Primary view: the rest cannot hold a majority",
            view.len()
        ));
    }
    if outside_down {
        return Ok("every node outside it is known down".into());
    }
    if view.is_empty() {
        return Err(
            "the last Primary view is not known yet, and not every other node is known down".into(),
        );
    }
    Err(format!(
        "holds {held} of the {} members of the last Primary view, and not every other node is known down",
        view.len()
    ))
}

/// The writer: the current one while it is a member of the Primary
/// component, running, not drained and not a donor (its own report may lag
/// the view for a moment, as right after a promotion: that is no reason to
/// move writes); else a Synced, undrained member of the Primary component,
/// preferring the primary DC (then the lowest name, so every party picks the
/// same).
/// The members of the Primary component, as a node in it reports them.
pub fn primary_members(nodes: &BTreeMap<String, Seen>) -> BTreeSet<String> {
    nodes
        .values()
        .filter_map(Seen::report)
        .find(|r| r.is_primary())
        .map(|r| r.members.iter().cloned().collect())
        .unwrap_or_default()
}

pub fn writer(
    settings: &Settings,
    current: Option<&str>,
    nodes: &BTreeMap<String, Seen>,
    drained: &BTreeSet<String>,
) -> Option<String> {
    let primary = primary_members(nodes);
    if primary.is_empty() {
        return None;
    }
    let fit = |n: &str| {
        primary.contains(n)
            && !drained.contains(n)
            && nodes
                .get(n)
                .and_then(Seen::report)
                .is_some_and(|r| r.is_primary() && r.local_state == "Synced")
    };
    let keep = |n: &str| {
        primary.contains(n)
            && !drained.contains(n)
            && nodes.get(n).and_then(Seen::report).is_some_and(|r| {
                r.running
                    && !r.local_state.starts_with("Donor")
                    && !r.local_state.contains("Desynced")
            })
    };
    if let Some(c) = current.filter(|c| keep(c)) {
        return Some(c.to_string());
    }
    // A writer handing over while it is only busy (an IST donor, Desynced
    // for a moment) hands over within its own DC: no failback to the
    // primary DC by way of a state transfer. A drained writer, or one that
    // left, hands over to the primary DC first.
    let home = current
        .filter(|c| primary.contains(*c) && !drained.contains(*c))
        .and_then(|c| settings.dcs.get(c));
    let mut fits: Vec<&String> = primary.iter().filter(|n| fit(n)).collect();
    fits.sort_by_key(|n| {
        (
            home.is_some_and(|h| settings.dcs.get(*n) != Some(h)),
            settings.dcs.get(*n) != Some(&settings.primary_dc),
            n.to_string(),
        )
    });
    fits.first().map(|n| n.to_string())
}

#[cfg(test)]
mod tests;
