//! The group: every syncer on one store is a member of one group, and each
//! job runs on exactly one live member at a time, under a lease.
//!
//! Every member runs [`Group::run`], a loop that each `heartbeat` period:
//! heartbeats its member row; claims or renews leadership (a lease of its
//! own in `ccr_leader`) if it is a normal member; renews the leases of the
//! jobs it holds; hands the job manager exactly the jobs it holds, at their
//! epochs ([`JobManager::own`]); lets go of the jobs the leader asked back;
//! and, if it leads, gives every job whose lease ran out, or whose holder is
//! gone, to the live normal member holding the fewest, drains members being
//! removed, and (switch `balance`) evens the counts out. Every change is one
//! conditional statement on the store (`store::group`), with the store's
//! clock, so two members (even two leaders, for a moment) never both win.
//!
//! **Exactly one writer.** A lease moves to a new holder at the next epoch.
//! The epoch fences the job's writes: on the store (a save names holder and
//! epoch, [`crate::store::Fence`]) and on the destination (the new holder
//! claims the checkpoint row at its epoch before it applies anything, and
//! every commit of an older epoch fails there: see `dest::checkpoint`).
//! A member frozen past its lease that wakes up therefore commits nothing
//! more for the job and stops it ("lost the job"). A member that cannot
//! reach the store for most of a lease stops its jobs on its own, so a store
//! outage leaves the group read-only, never with two owners.
//!
//! Takeover after a member dies takes at most one lease (default 8 s) plus
//! one heartbeat period, then the job resumes from the destination's
//! checkpoint.

use crate::job::manager::Claim;
use crate::job::spec::JobSpec;
use crate::job::{JobError, JobManager};
use crate::metrics::{GroupReading, Metrics};
use crate::store::group::{LeaderRow, Lease, MemberRow, LEARNER, NORMAL};
use crate::store::{GroupStore, MetaStore, StoreError};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// This member's id (default: the API's `host:port`).
    pub member_id: String,
    /// Where the other members reach this one's API: `http://host:port`.
    pub address: String,
    /// [`NORMAL`] or [`LEARNER`], for a member that creates its row.
    pub member_type: i64,
    /// How long a lease (a job's, the leader's) lasts without renewal.
    pub lease: Duration,
    /// How often the loop runs.
    pub heartbeat: Duration,
}

/// What the loop last saw: the answer of `/stat`.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Store time of the reading.
    pub now: i64,
    pub members: Vec<MemberRow>,
    pub leader: LeaderRow,
    pub leases: Vec<Lease>,
    /// Why this member cannot write the store, when it cannot.
    pub read_only: Option<String>,
    /// Jobs this member lost to another (job, epoch it held, store time).
    pub lost: Vec<(String, i64, i64)>,
}

impl View {
    /// The leader, while its lease runs.
    pub fn leader(&self) -> Option<&str> {
        (!self.leader.holder.is_empty() && self.leader.expires_at >= self.now)
            .then_some(self.leader.holder.as_str())
    }

    /// How many jobs `member` holds.
    pub fn jobs_owned(&self, member: &str) -> usize {
        self.leases
            .iter()
            .filter(|l| l.owner == member && l.held_at(self.now))
            .count()
    }
}

/// A member's state as `/stat` reports it.
pub fn member_state(m: &MemberRow, now: i64, lease: Duration) -> &'static str {
    if m.state == "draining" {
        "draining"
    } else if m.heartbeat_at > 0 && now - m.heartbeat_at <= lease.as_millis() as i64 {
        "alive"
    } else {
        "dead"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the group's store cannot be reached: {0}")]
    Store(#[from] StoreError),
}

/// Where a request for a job goes.
pub enum Route {
    /// This member runs it.
    Here,
    /// Another member holds it: its API address.
    Forward { member: String, address: String },
    /// The member holding it has not heartbeat for a while (frozen, cut
    /// off): it loses the job when its lease runs out.
    Silent {
        member: String,
        quiet_ms: i64,
        expires_in_ms: i64,
    },
    /// No live member holds it right now (a takeover is under way).
    Unowned,
}

pub struct Group {
    store: GroupStore,
    manager: Arc<JobManager>,
    metrics: Arc<Metrics>,
    settings: GroupSettings,
    incarnation: String,
    view: RwLock<View>,
    /// The row is gone: removed from the group, or taken by a process with
    /// the same id. Owns nothing until restarted.
    removed: AtomicBool,
}

/// The background tasks a `/config/set` switches.
pub const SWITCHES: [&str; 3] = crate::job::Switches::KEYS;

impl Group {
    /// Joins the group: creates this member's row, or takes it over from
    /// a process with the same id that stopped heartbeating (waiting up to
    /// two leases for that; a live one is refused), and takes this member's
    /// own leases at a new epoch.
    pub async fn join(
        store: Arc<dyn MetaStore>,
        manager: Arc<JobManager>,
        metrics: Arc<Metrics>,
        settings: GroupSettings,
    ) -> Result<Arc<Group>, StoreError> {
        let group = Arc::new(Group {
            store: GroupStore::new(store),
            manager,
            metrics,
            incarnation: incarnation(),
            view: RwLock::new(View::default()),
            removed: AtomicBool::new(false),
            settings,
        });
        let s = &group.settings;
        let lease_ms = s.lease.as_millis() as i64;
        let deadline = Instant::now() + 2 * s.lease;
        let mut waited = false;
        loop {
            let now = group.store.now_ms().await?;
            let members = group.store.members().await?;
            match members.iter().find(|m| m.id == s.member_id) {
                None => {
                    let row = MemberRow {
                        id: s.member_id.clone(),
                        address: s.address.clone(),
                        member_type: s.member_type,
                        state: "normal".into(),
                        incarnation: group.incarnation.clone(),
                        heartbeat_at: now,
                        joined_at: now,
                    };
                    match group.store.insert_member(&row).await {
                        Ok(()) => break,
                        Err(StoreError::Duplicate(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(old) => {
                    let stale = !group.store.shared()
                        || old.heartbeat_at == 0
                        || now - old.heartbeat_at > lease_ms;
                    if stale {
                        if group
                            .store
                            .take_member(old, &group.incarnation, &s.address, now)
                            .await?
                        {
                            break;
                        }
                        continue;
                    }
                    if Instant::now() > deadline {
                        return Err(StoreError::Backend(format!(
                            "member id {} is in use by a running syncer (it heartbeat {} ms ago, \
                             from {}): give this one its own --member-id",
                            s.member_id,
                            now - old.heartbeat_at,
                            old.address
                        )));
                    }
                    if !waited {
                        info!(member = %s.member_id, "waiting for the previous syncer with this \
                              member id to stop heartbeating");
                        waited = true;
                    }
                    tokio::time::sleep(s.heartbeat).await;
                }
            }
        }
        let now = group.store.now_ms().await?;
        let mut bumped = group
            .store
            .bump_own_leases(&s.member_id, now + lease_ms)
            .await?;
        if !group.store.shared() {
            // The SQLite store is locked to this process: whatever another
            // member id held there was an earlier process's.
            bumped += group.store.take_all(&s.member_id, now + lease_ms).await?;
        }
        info!(member = %s.member_id, address = %s.address, shared = group.store.shared(),
              jobs_held = bumped, "joined the group");
        group.tick().await?;
        Ok(group)
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    pub fn member_id(&self) -> &str {
        &self.settings.member_id
    }

    pub fn view(&self) -> View {
        self.view.read().clone()
    }

    pub fn shared(&self) -> bool {
        self.store.shared()
    }

    /// Whether this member holds the leadership now, read from the store
    /// (not from the loop's last view, which a frozen member still
    /// believes): what the cluster manager checks before each step. A
    /// group of one always leads.
    pub async fn leads_now(&self) -> Result<bool, StoreError> {
        if !self.shared() || self.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(!self.shared());
        }
        let leader = self.store.leader().await?;
        let now = self.store.now_ms().await?;
        Ok(leader.holder == self.settings.member_id && leader.expires_at >= now)
    }

    /// Runs the loop until `shutdown`, then lets go of every job held here
    /// (after the manager stopped them) so that others take them at once.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut renewed = Instant::now();
        let mut interval = tokio::time::interval(self.settings.heartbeat);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = interval.tick() => {}
            }
            let started = Instant::now();
            match self.tick().await {
                Ok(()) => {
                    renewed = started;
                    self.view.write().read_only = None;
                    self.metrics.set_group_read_only(false);
                }
                Err(e) => {
                    let quiet = renewed.elapsed();
                    if self.view.read().read_only.is_none() {
                        warn!(error = %e, "the group's store cannot be written: read-only");
                    }
                    self.view.write().read_only = Some(e.to_string());
                    self.metrics.set_group_read_only(true);
                    // Past most of a lease without renewal, another member
                    // may hold our jobs soon: stop them first.
                    if quiet > self.settings.lease * 3 / 4 && !self.manager.list().is_empty() {
                        error!(
                            quiet_ms = quiet.as_millis() as u64,
                            "no contact with the store for most of a lease: stopping this \
                                member's jobs so that no job runs twice"
                        );
                        self.manager.release_all().await;
                    }
                }
            }
        }
    }

    /// After the manager stopped every job: lets their leases and the
    /// leadership go.
    pub async fn leave(&self) {
        let id = &self.settings.member_id;
        if let Err(e) = self.store.sign_off(id, &self.incarnation).await {
            warn!(error = %e, "could not sign off from the group; the others see this member dead within a lease");
        }
        let leases = match self.store.leases().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "could not let the jobs' leases go; they run out by themselves");
                return;
            }
        };
        for lease in leases.iter().filter(|l| &l.owner == id) {
            let _ = self.store.release(&lease.job, &lease.fence()).await;
        }
        let _ = self.store.resign_leader(id).await;
    }

    async fn tick(&self) -> Result<(), StoreError> {
        let s = &self.settings;
        let id = s.member_id.as_str();
        let lease_ms = s.lease.as_millis() as i64;
        let now = self.store.now_ms().await?;
        if !self.removed.load(Ordering::Relaxed)
            && !self
                .store
                .heartbeat(id, &self.incarnation, &s.address, now)
                .await?
        {
            self.removed.store(true, Ordering::Relaxed);
            warn!(member = %id, "this member is no longer in the group (removed, or its id \
                  was taken by another syncer): it holds no jobs from now on; restart it to \
                  join again");
        }
        let removed = self.removed.load(Ordering::Relaxed);
        let members = self.store.members().await?;
        let me = members.iter().find(|m| m.id == id);
        let can_lead =
            !removed && me.is_some_and(|m| m.member_type == NORMAL && m.state == "normal");
        if can_lead {
            let was = self.view.read().leader.holder == id;
            if self.store.claim_leader(id, now, now + lease_ms).await? && !was {
                info!(member = %id, "this member leads the group");
            }
        }
        let mut leader = self.store.leader().await?;
        if !can_lead && leader.holder == id && leader.expires_at >= now {
            self.store.resign_leader(id).await?;
            leader.expires_at = 0;
        }
        if !removed {
            self.store.renew_leases(id, now + lease_ms).await?;
        }
        let leases = self.store.leases().await?;
        let held: Vec<Lease> = leases
            .iter()
            .filter(|l| !removed && l.owner == id && l.held_at(now) && !l.release_requested)
            .cloned()
            .collect();
        // Jobs running here that another member holds now.
        let mut lost = Vec::new();
        for name in self.manager.list() {
            let Some(lease) = leases.iter().find(|l| l.job == name) else {
                continue;
            };
            if lease.owner != id && !lease.owner.is_empty() {
                let epoch = self.manager.snapshot(&name).map_or(0, |j| j.fence.epoch);
                error!(job = %name, holder = %lease.owner, epoch = lease.epoch,
                       "lost the job: another member holds its lease now; stopping it here");
                lost.push((name.clone(), epoch, now));
                self.metrics.count_job_lost();
            }
        }
        self.manager.own(&held).await?;
        for lease in leases
            .iter()
            .filter(|l| l.owner == id && l.release_requested)
        {
            if self.store.release(&lease.job, &lease.fence()).await? {
                info!(job = %lease.job, "job handed back to the leader, for another member");
            }
        }
        if leader.holder == id && leader.expires_at >= now && can_lead {
            self.lead(now, &members, &leases).await?;
        }
        let switches = self.store.switches().await?;
        for (key, flag) in self.manager.switches().all() {
            let on = switches
                .iter()
                .find(|(k, _)| k == key)
                .is_none_or(|(_, v)| v != "Disable");
            flag.store(on, Ordering::Relaxed);
        }
        let state_count = |state: &str| {
            members
                .iter()
                .filter(|m| member_state(m, now, s.lease) == state)
                .count()
        };
        self.metrics.set_group(GroupReading {
            alive: state_count("alive"),
            draining: state_count("draining"),
            dead: state_count("dead"),
            leader: leader.holder == id && leader.expires_at >= now,
            term: leader.term,
            read_only: false,
            unowned: leases.iter().filter(|l| !l.held_at(now)).count(),
        });
        let mut view = self.view.write();
        view.now = now;
        view.members = members;
        view.leader = leader;
        view.leases = leases;
        view.lost.extend(lost);
        let excess = view.lost.len().saturating_sub(32);
        view.lost.drain(..excess);
        Ok(())
    }

    /// The leader's work: every job held by a live member, drains, balance.
    async fn lead(
        &self,
        now: i64,
        members: &[MemberRow],
        leases: &[Lease],
    ) -> Result<(), StoreError> {
        let lease = self.settings.lease;
        let lease_ms = lease.as_millis() as i64;
        let alive = |m: &MemberRow| member_state(m, now, lease) == "alive";
        let mut counts: BTreeMap<&str, usize> = members
            .iter()
            .filter(|m| alive(m) && m.member_type == NORMAL)
            .map(|m| (m.id.as_str(), 0))
            .collect();
        let valid = |l: &Lease| l.held_at(now) && members.iter().any(|m| m.id == l.owner);
        for l in leases.iter().filter(|l| valid(l)) {
            if let Some(n) = counts.get_mut(l.owner.as_str()) {
                *n += 1;
            }
        }
        for l in leases.iter().filter(|l| !valid(l)) {
            let Some(target) = counts
                .iter()
                .min_by_key(|(id, n)| (**n, **id))
                .map(|(id, _)| id.to_string())
            else {
                break;
            };
            if self.store.assign(l, &target, now + lease_ms).await? {
                info!(job = %l.job, from = %l.owner, to = %target, epoch = l.epoch + 1,
                      "job assigned");
                self.metrics.count_assignment();
                *counts.get_mut(target.as_str()).expect("a counted member") += 1;
            }
        }
        for m in members.iter().filter(|m| m.state == "draining") {
            let owned: Vec<&Lease> = leases
                .iter()
                .filter(|l| l.owner == m.id && valid(l))
                .collect();
            if owned.is_empty() {
                if self.store.delete_member(&m.id).await? {
                    info!(member = %m.id, "member drained and removed from the group");
                }
                continue;
            }
            for l in owned.iter().filter(|l| !l.release_requested) {
                self.store.request_release(&l.job, &m.id).await?;
            }
        }
        let balance = self.manager.switches().balance.load(Ordering::Relaxed);
        if balance && !leases.iter().any(|l| l.release_requested) {
            let busiest = counts
                .iter()
                .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)));
            let idlest = counts.iter().min_by_key(|(id, n)| (**n, **id));
            if let (Some((from, most)), Some((_, least))) = (busiest, idlest) {
                if *most >= *least + 2 {
                    if let Some(l) = leases.iter().find(|l| l.owner == *from && valid(l)) {
                        info!(job = %l.job, from = %from, "balancing: moving a job");
                        self.store.request_release(&l.job, from).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a request for job `name` goes; starts it here at once when this
    /// member holds it but its task has not started yet.
    pub async fn route(&self, name: &str) -> Result<Route, JobError> {
        if self.manager.runs(name) {
            return Ok(Route::Here);
        }
        let lease = self
            .store
            .lease_of(name)
            .await?
            .ok_or_else(|| JobError::NotFound(name.to_string()))?;
        let now = self.store.now_ms().await?;
        if !lease.held_at(now) {
            return Ok(Route::Unowned);
        }
        if lease.owner == self.settings.member_id {
            if !lease.release_requested {
                self.manager.adopt(&lease).await?;
            }
            return Ok(if self.manager.runs(name) {
                Route::Here
            } else {
                Route::Unowned
            });
        }
        let members = self.store.members().await?;
        let quiet_after = 3 * self.settings.heartbeat.as_millis() as i64;
        match members.into_iter().find(|m| m.id == lease.owner) {
            Some(m) if now - m.heartbeat_at > quiet_after => Ok(Route::Silent {
                member: m.id,
                quiet_ms: now - m.heartbeat_at,
                expires_in_ms: lease.expires_at - now,
            }),
            Some(m) => Ok(Route::Forward {
                member: m.id,
                address: m.address,
            }),
            None => Ok(Route::Unowned),
        }
    }

    /// Every job of the group, by name.
    pub async fn job_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .leases()
            .await?
            .into_iter()
            .map(|l| l.job)
            .collect())
    }

    /// Creates a job and gives it at once to the live normal member holding
    /// the fewest jobs (this one on a tie), so that it has an owner to
    /// answer for it from the start. Returns the owner.
    pub async fn create(&self, spec: JobSpec) -> Result<Option<String>, JobError> {
        let view = self.view();
        let id = self.settings.member_id.as_str();
        let lease = self.settings.lease;
        let removed = self.removed.load(Ordering::Relaxed);
        let target = view
            .members
            .iter()
            .filter(|m| {
                m.member_type == NORMAL
                    && m.state == "normal"
                    && if m.id == id {
                        !removed
                    } else {
                        member_state(m, view.now, lease) == "alive"
                    }
            })
            .min_by_key(|m| (view.jobs_owned(&m.id), m.id != id, m.id.clone()))
            .map(|m| m.id.clone());
        let claim = target.map(|member| Claim {
            here: member == id,
            member,
            lease,
        });
        self.manager.create(spec, claim).await
    }
}

fn check_switch(key: &str) -> Result<(), GroupError> {
    if SWITCHES.contains(&key) {
        Ok(())
    } else {
        Err(GroupError::Invalid(format!(
            "unknown key {key:?}: the switches are {}",
            SWITCHES.join(", ")
        )))
    }
}

/// An API address from `host:port` or `http(s)://host:port`.
pub fn api_address(host: &str) -> Result<String, String> {
    let host = host.trim().trim_end_matches('/');
    let (scheme, rest) = match host.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => {
            return Err(format!(
                "host {host:?}: scheme {other} is not http or https"
            ))
        }
        None => ("http", host),
    };
    let valid = rest.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !valid {
        return Err(format!(
            "host {host:?} is not host:port (the member's API address)"
        ));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// A random id for this process.
fn incarnation() -> String {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod admin;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
