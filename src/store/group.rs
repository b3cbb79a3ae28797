//! The group's rows in the store: members (`ccr_members`), the leader
//! (`ccr_leader`, one row), the switches of background tasks
//! (`ccr_switches`), and every job's lease (the `owner`, `owner_epoch`,
//! `lease_expires_at` and `release_requested` columns of `ccr_jobs`).
//!
//! Every change is one conditional statement, so members racing on a row
//! settle it in the store: an update that matched no row lost the race.
//! Times are the store's clock ([`MetaStore::now_ms`]), so members' own
//! clocks never decide who holds what. The same statements run on both
//! backends; a SQLite store is a group of one.

use super::{Fence, MetaStore, SqlValue, StoreError};
use std::sync::Arc;

/// A member as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub id: String,
    /// Where the others reach its API: `http://host:port`.
    pub address: String,
    /// 1: a learner (serves the API, owns no jobs); 2: normal.
    pub member_type: i64,
    /// `normal`, or `draining` once its removal was asked for.
    pub state: String,
    /// Random per process: two processes never heartbeat one row.
    pub incarnation: String,
    /// Store time of its last heartbeat (0: never started).
    pub heartbeat_at: i64,
    pub joined_at: i64,
}

pub const LEARNER: i64 = 1;
pub const NORMAL: i64 = 2;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderRow {
    pub holder: String,
    pub term: i64,
    pub expires_at: i64,
}

/// A job's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: String,
    /// Empty when nobody holds it.
    pub owner: String,
    pub epoch: i64,
    pub expires_at: i64,
    /// The leader asked the owner to let go (drain, balance).
    pub release_requested: bool,
    pub run_state: String,
}

impl Lease {
    /// Whether a member holds the lease at store time `now`.
    pub fn held_at(&self, now: i64) -> bool {
        !self.owner.is_empty() && self.expires_at >= now
    }

    pub fn fence(&self) -> Fence {
        Fence {
            member: self.owner.clone(),
            epoch: self.epoch,
        }
    }
}

const SELECT_MEMBERS: &str = "SELECT id, address, member_type, state, incarnation, heartbeat_at, \
     joined_at FROM ccr_members ORDER BY id";
const INSERT_MEMBER: &str = "INSERT INTO ccr_members (id, address, member_type, state, \
     incarnation, heartbeat_at, joined_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
const TAKE_MEMBER: &str = "UPDATE ccr_members SET incarnation = ?, address = ?, heartbeat_at = ? \
     WHERE id = ? AND incarnation = ? AND heartbeat_at = ?";
const HEARTBEAT: &str = "UPDATE ccr_members SET heartbeat_at = ?, address = ? \
     WHERE id = ? AND incarnation = ?";
/// A member stopping: dead at once, so that nothing is assigned to it.
const SIGN_OFF: &str = "UPDATE ccr_members SET heartbeat_at = 0 WHERE id = ? AND incarnation = ?";
const SET_MEMBER_STATE: &str = "UPDATE ccr_members SET state = ? WHERE id = ?";
const DELETE_MEMBER: &str = "DELETE FROM ccr_members WHERE id = ? AND state = 'draining'";

const SELECT_LEADER: &str = "SELECT holder, term, expires_at FROM ccr_leader WHERE id = 1";
/// Renews the lease of leadership, or takes it when it ran out; a new
/// holder starts a new term.
const CLAIM_LEADER: &str = "UPDATE ccr_leader SET \
     term = CASE WHEN holder = ? THEN term ELSE term + 1 END, holder = ?, expires_at = ? \
     WHERE id = 1 AND (holder = ? OR expires_at < ?)";
const RESIGN_LEADER: &str = "UPDATE ccr_leader SET expires_at = 0 WHERE id = 1 AND holder = ?";
const TRANSFER_LEADER: &str =
    "UPDATE ccr_leader SET holder = ?, term = term + 1, expires_at = ? WHERE id = 1 AND holder <> ?";

const SELECT_LEASES: &str = "SELECT name, owner, owner_epoch, lease_expires_at, \
     release_requested, run_state FROM ccr_jobs ORDER BY name";
const SELECT_LEASE: &str = "SELECT name, owner, owner_epoch, lease_expires_at, \
     release_requested, run_state FROM ccr_jobs WHERE name = ?";
const RENEW_LEASES: &str = "UPDATE ccr_jobs SET lease_expires_at = ? \
     WHERE owner = ? AND release_requested = 0";
/// A member starting again takes its own leases at a new epoch, so that a
/// process it replaces (frozen, not dead) is fenced off.
const BUMP_OWN: &str = "UPDATE ccr_jobs SET owner_epoch = owner_epoch + 1, lease_expires_at = ? \
     WHERE owner = ?";
/// A group of one (SQLite, locked to one process) takes every lease.
const TAKE_ALL: &str = "UPDATE ccr_jobs SET owner = ?, owner_epoch = owner_epoch + 1, \
     lease_expires_at = ?, release_requested = 0 WHERE owner <> ?";
const FORGET_OTHERS: &str = "DELETE FROM ccr_members WHERE id <> ?";
const ASSIGN: &str = "UPDATE ccr_jobs SET owner = ?, owner_epoch = owner_epoch + 1, \
     lease_expires_at = ?, release_requested = 0 WHERE name = ? AND owner = ? AND owner_epoch = ?";
const REQUEST_RELEASE: &str = "UPDATE ccr_jobs SET release_requested = 1 \
     WHERE name = ? AND owner = ? AND release_requested = 0";
const RELEASE: &str = "UPDATE ccr_jobs SET owner = '', lease_expires_at = 0, \
     release_requested = 0 WHERE name = ? AND owner = ? AND owner_epoch = ?";

const SELECT_SWITCHES: &str = "SELECT name, value FROM ccr_switches ORDER BY name";
const UPDATE_SWITCH: &str = "UPDATE ccr_switches SET value = ?, updated_at = ? WHERE name = ?";
const INSERT_SWITCH: &str = "INSERT INTO ccr_switches (name, value, updated_at) VALUES (?, ?, ?)";

/// Typed access to the group's rows.
#[derive(Clone)]
pub struct GroupStore {
    store: Arc<dyn MetaStore>,
}

fn v<T: Into<SqlValue>>(x: T) -> SqlValue {
    x.into()
}

impl GroupStore {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        GroupStore { store }
    }

    pub fn shared(&self) -> bool {
        self.store.shared()
    }

    pub async fn now_ms(&self) -> Result<i64, StoreError> {
        self.store.now_ms().await
    }

    pub async fn members(&self) -> Result<Vec<MemberRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_MEMBERS, vec![])
            .await?
            .into_iter()
            .map(|r| MemberRow {
                id: r[0].text(),
                address: r[1].text(),
                member_type: r[2].int(),
                state: r[3].text(),
                incarnation: r[4].text(),
                heartbeat_at: r[5].int(),
                joined_at: r[6].int(),
            })
            .collect())
    }

    /// Adds a member; [`StoreError::Duplicate`] (named) if the id is taken.
    pub async fn insert_member(&self, m: &MemberRow) -> Result<(), StoreError> {
        self.store
            .execute(
                INSERT_MEMBER,
                vec![
                    v(m.id.as_str()),
                    v(m.address.as_str()),
                    v(m.member_type),
                    v(m.state.as_str()),
                    v(m.incarnation.as_str()),
                    v(m.heartbeat_at),
                    v(m.joined_at),
                ],
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Duplicate(_) => StoreError::Duplicate(m.id.clone()),
                other => other,
            })
    }

    /// Takes over a member's row from the process that last heartbeat it
    /// (seen as `old`): false if that process heartbeat again meanwhile.
    pub async fn take_member(
        &self,
        old: &MemberRow,
        incarnation: &str,
        address: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(
                TAKE_MEMBER,
                vec![
                    v(incarnation),
                    v(address),
                    v(now),
                    v(old.id.as_str()),
                    v(old.incarnation.as_str()),
                    v(old.heartbeat_at),
                ],
            )
            .await?
            == 1)
    }

    /// False when the row is gone (removed) or another process took it.
    pub async fn heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        address: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(HEARTBEAT, vec![v(now), v(address), v(id), v(incarnation)])
            .await?
            == 1)
    }

    pub async fn sign_off(&self, id: &str, incarnation: &str) -> Result<(), StoreError> {
        self.store
            .execute(SIGN_OFF, vec![v(id), v(incarnation)])
            .await
            .map(|_| ())
    }

    pub async fn set_member_state(&self, id: &str, state: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(SET_MEMBER_STATE, vec![v(state), v(id)])
            .await?
            == 1)
    }

    /// Deletes a draining member's row.
    pub async fn delete_member(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.store.execute(DELETE_MEMBER, vec![v(id)]).await? == 1)
    }

    pub async fn leader(&self) -> Result<LeaderRow, StoreError> {
        Ok(self
            .store
            .select(SELECT_LEADER, vec![])
            .await?
            .first()
            .map(|r| LeaderRow {
                holder: r[0].text(),
                term: r[1].int(),
                expires_at: r[2].int(),
            })
            .unwrap_or_default())
    }

    pub async fn claim_leader(
        &self,
        id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(
                CLAIM_LEADER,
                vec![v(id), v(id), v(expires_at), v(id), v(now)],
            )
            .await?
            == 1)
    }

    pub async fn resign_leader(&self, id: &str) -> Result<(), StoreError> {
        self.store.execute(RESIGN_LEADER, vec![v(id)]).await?;
        Ok(())
    }

    /// Hands leadership to `id` at once, in a new term.
    pub async fn transfer_leader(&self, id: &str, expires_at: i64) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(TRANSFER_LEADER, vec![v(id), v(expires_at), v(id)])
            .await?
            == 1)
    }

    fn lease(r: &[SqlValue]) -> Lease {
        Lease {
            job: r[0].text(),
            owner: r[1].text(),
            epoch: r[2].int(),
            expires_at: r[3].int(),
            release_requested: r[4].int() != 0,
            run_state: r[5].text(),
        }
    }

    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self
            .store
            .select(SELECT_LEASES, vec![])
            .await?
            .iter()
            .map(|r| Self::lease(r))
            .collect())
    }

    pub async fn lease_of(&self, job: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self
            .store
            .select(SELECT_LEASE, vec![v(job)])
            .await?
            .first()
            .map(|r| Self::lease(r)))
    }

    pub async fn renew_leases(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.store
            .execute(RENEW_LEASES, vec![v(expires_at), v(id)])
            .await?;
        Ok(())
    }

    pub async fn bump_own_leases(&self, id: &str, expires_at: i64) -> Result<u64, StoreError> {
        self.store
            .execute(BUMP_OWN, vec![v(expires_at), v(id)])
            .await
    }

    /// In a group of one: every job becomes this member's (at a new epoch)
    /// and every other member row is dropped (an earlier process's).
    pub async fn take_all(&self, id: &str, expires_at: i64) -> Result<u64, StoreError> {
        self.store.execute(FORGET_OTHERS, vec![v(id)]).await?;
        self.store
            .execute(TAKE_ALL, vec![v(id), v(expires_at), v(id)])
            .await
    }

    /// Moves a lease from (`owner`, `epoch`) to `to` at the next epoch;
    /// false if it changed hands meanwhile.
    pub async fn assign(
        &self,
        lease: &Lease,
        to: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(
                ASSIGN,
                vec![
                    v(to),
                    v(expires_at),
                    v(lease.job.as_str()),
                    v(lease.owner.as_str()),
                    v(lease.epoch),
                ],
            )
            .await?
            == 1)
    }

    pub async fn request_release(&self, job: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(REQUEST_RELEASE, vec![v(job), v(owner)])
            .await?
            == 1)
    }

    /// The owner lets a lease go (after stopping the job's work).
    pub async fn release(&self, job: &str, fence: &Fence) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(
                RELEASE,
                vec![v(job), v(fence.member.as_str()), v(fence.epoch)],
            )
            .await?
            == 1)
    }

    pub async fn switches(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .store
            .select(SELECT_SWITCHES, vec![])
            .await?
            .into_iter()
            .map(|r| (r[0].text(), r[1].text()))
            .collect())
    }

    pub async fn set_switch(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        if self
            .store
            .execute(UPDATE_SWITCH, vec![v(value), v(now), v(name)])
            .await?
            == 1
        {
            return Ok(());
        }
        match self
            .store
            .execute(INSERT_SWITCH, vec![v(name), v(value), v(now)])
            .await
        {
            Ok(_) => Ok(()),
            // Another member inserted it first: ours is the later write.
            Err(StoreError::Duplicate(_)) => self
                .store
                .execute(UPDATE_SWITCH, vec![v(value), v(now), v(name)])
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }
}
