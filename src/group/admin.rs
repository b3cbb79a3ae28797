//! The group's admin operations of seed 003: members added and removed,
//! the leadership handed over, the switches of the background tasks.

use super::*;

impl Group {
    /// `POST /member/add`: a member row for a syncer to start with that id.
    pub async fn add_member(
        &self,
        peer_id: &str,
        host: &str,
        member_type: i64,
    ) -> Result<(), GroupError> {
        if !self.store.shared() {
            return Err(GroupError::Conflict(
                "this syncer's store is SQLite, a group of one: to run a group, start the \
                 syncers on one MySQL store (--db-type mysql)"
                    .into(),
            ));
        }
        if peer_id.trim().is_empty() || peer_id.len() > 255 {
            return Err(GroupError::Invalid(
                "peer_id must be 1 to 255 characters".into(),
            ));
        }
        if ![LEARNER, NORMAL].contains(&member_type) {
            return Err(GroupError::Invalid(format!(
                "member_type {member_type} is not 1 (learner: serves the API, owns no jobs) or \
                 2 (normal)"
            )));
        }
        let address = api_address(host).map_err(GroupError::Invalid)?;
        let row = MemberRow {
            id: peer_id.to_string(),
            address,
            member_type,
            state: "normal".into(),
            incarnation: String::new(),
            heartbeat_at: 0,
            joined_at: self.store.now_ms().await?,
        };
        match self.store.insert_member(&row).await {
            Ok(()) => {
                info!(member = %peer_id, host = %row.address, member_type, "member added");
                Ok(())
            }
            Err(StoreError::Duplicate(_)) => Err(GroupError::Conflict(format!(
                "peer_id {peer_id} is already a member of the group"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The store's time, every member, and the one named (unknown: 404).
    async fn member(&self, peer_id: &str) -> Result<(i64, Vec<MemberRow>, MemberRow), GroupError> {
        let now = self.store.now_ms().await?;
        let members = self.store.members().await?;
        let member = members
            .iter()
            .find(|m| m.id == peer_id)
            .cloned()
            .ok_or_else(|| unknown_peer(peer_id, &members))?;
        Ok((now, members, member))
    }

    /// `POST /member/remove`: drains the member; the leader moves its jobs
    /// to others, then removes it. Returns how many jobs it holds.
    pub async fn remove_member(&self, peer_id: &str) -> Result<usize, GroupError> {
        let (now, members, member) = self.member(peer_id).await?;
        if member.state == "draining" {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} is already being removed"
            )));
        }
        let lease = self.settings.lease;
        let others = members
            .iter()
            .filter(|m| {
                m.id != peer_id
                    && m.member_type == NORMAL
                    && m.state == "normal"
                    && member_state(m, now, lease) == "alive"
            })
            .count();
        if member.member_type == NORMAL && others == 0 {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} is the group's last live normal member: its jobs would have \
                 nowhere to go; add or start another member first"
            )));
        }
        let leader = self.store.leader().await?;
        if leader.holder == peer_id && leader.expires_at >= now {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} is the group's leader: move the leadership first \
                 (POST /leadership/transfer)"
            )));
        }
        self.store.set_member_state(peer_id, "draining").await?;
        let held = self
            .store
            .leases()
            .await?
            .iter()
            .filter(|l| l.owner == peer_id)
            .count();
        info!(member = %peer_id, jobs = held, "member draining: its jobs move to others");
        Ok(held)
    }

    /// `POST /leadership/transfer`.
    pub async fn transfer_leadership(&self, peer_id: &str) -> Result<i64, GroupError> {
        let (now, _, member) = self.member(peer_id).await?;
        let state = member_state(&member, now, self.settings.lease);
        if member.member_type != NORMAL {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} is a learner: only a normal member can lead"
            )));
        }
        if state != "alive" {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} is {state}: only a live member can lead"
            )));
        }
        let leader = self.store.leader().await?;
        if leader.holder == peer_id && leader.expires_at >= now {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} already leads the group (term {})",
                leader.term
            )));
        }
        let lease_ms = self.settings.lease.as_millis() as i64;
        if !self.store.transfer_leader(peer_id, now + lease_ms).await? {
            return Err(GroupError::Conflict(format!(
                "peer {peer_id} already leads the group"
            )));
        }
        let term = self.store.leader().await?.term;
        info!(member = %peer_id, term, "leadership transferred");
        Ok(term)
    }

    /// Every switch as this member applies it now (from the store at the
    /// last heartbeat, or a `/config/set` made here since).
    pub fn switches(&self) -> Vec<(&'static str, bool)> {
        self.manager
            .switches()
            .all()
            .into_iter()
            .map(|(key, flag)| (key, flag.load(Ordering::Relaxed)))
            .collect()
    }

    /// `GET /config/get?key=…`: Enable or Disable.
    pub async fn switch(&self, key: &str) -> Result<&'static str, GroupError> {
        check_switch(key)?;
        let stored = self.store.switches().await?;
        Ok(
            match stored
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
            {
                Some("Disable") => "Disable",
                _ => "Enable",
            },
        )
    }

    /// `POST /config/set`: stored for every member; this one applies it at
    /// once, the others at their next heartbeat.
    pub async fn set_switch(&self, key: &str, value: &str) -> Result<(), GroupError> {
        check_switch(key)?;
        if value != "Enable" && value != "Disable" {
            return Err(GroupError::Invalid(format!(
                "value {value:?} is not \"Enable\" or \"Disable\""
            )));
        }
        let now = self.store.now_ms().await?;
        self.store.set_switch(key, value, now).await?;
        if let Some(flag) = self.manager.switches().get(key) {
            flag.store(value == "Enable", Ordering::Relaxed);
        }
        info!(key, value, "group switch set");
        Ok(())
    }
}

fn unknown_peer(peer_id: &str, members: &[MemberRow]) -> GroupError {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    GroupError::NotFound(format!(
        "peer {peer_id} is not a member of the group (members: {})",
        ids.join(", ")
    ))
}
