//! Following a failover: when the source is gone, the node that took over
//! among those it reported, if it holds everything the job applied.

use super::Incremental;
use crate::db;
use crate::dest::checkpoint;
use crate::source::topology;
use mysql_async::prelude::*;
use tracing::{info, warn};

impl Incremental {
    /// After the source became unreachable: looks for the node that took
    /// over among those the source reported (its primary, its replicas),
    /// each reached through the host mapping, and follows the first that is
    /// a writable primary holding every transaction the job has applied
    /// (the destination's checkpoint). Returns what it now follows.
    pub async fn follow_primary(&self) -> Option<String> {
        let name = self.spec.name.as_str();
        let current = self.source();
        if db::connect(&current.server_addr(), None, self.connect_timeout)
            .await
            .is_ok()
        {
            return None;
        }
        let mut dest = self.connect_dest().await.ok()?;
        let cp = checkpoint::load(&mut dest, &self.spec.dest.database, name)
            .await
            .ok()
            .flatten()
            .filter(|c| c.run_id == self.run_id)?;
        let applied = Some(cp.position.gtid).filter(|p| !p.is_empty())?;
        let (topo, following) = {
            let p = self.progress.borrow();
            (p.detail.topology.clone(), p.detail.source_node.clone())
        };
        let src = self.live.source();
        // A managed shard's source: its primary as the cluster manager has
        // it first (its replicas may not report themselves).
        let managed = self
            .live
            .shard_primary(following.as_deref().unwrap_or(&src.address()))
            .await;
        for node in managed.iter().chain(topo.candidates()) {
            if following.as_ref() == Some(node) {
                continue;
            }
            let Some((host, port)) = topology::split(node) else {
                continue;
            };
            let (host, port) = src.host_mapping.translate(host, port);
            let addr = crate::db::ServerAddr {
                host: &host,
                port,
                user: &src.user,
                password: &src.password,
                tls: &src.tls,
            };
            let mut conn = match db::connect(&addr, None, self.connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(job = %name, candidate = %node, reached_at = %format!("{host}:{port}"),
                          error = %e, "failover candidate unreachable");
                    continue;
                }
            };
            match topology::can_take_over(&mut conn, &applied).await {
                Ok(()) => {
                    info!(job = %name, node = %node, reached_at = %format!("{host}:{port}"),
                          position = %applied, "the source is gone; following the new primary");
                    self.progress
                        .send_modify(|a| a.detail.source_node = Some(node.clone()));
                    return Some(format!("{node} (reached at {host}:{port})"));
                }
                Err(why) => {
                    warn!(job = %name, candidate = %node, reason = %why, "not following this node")
                }
            }
        }
        None
    }

    /// After an error: when the destination is a node of a managed shard
    /// whose primary moved (a failover, a switchover), the job writes to
    /// the new primary from the destination's checkpoint, which the new
    /// primary holds with every acknowledged commit (semi-synchronous
    /// shards). Returns what it now writes to.
    pub async fn follow_dest(&self) -> Option<String> {
        let dest = self.dest();
        let current = dest.address();
        let primary = self.live.shard_primary(&current).await?;
        if primary == current {
            return None;
        }
        // A node that still takes writes is left alone (a job may write
        // to a replica on purpose): only a demoted or gone one is followed.
        if let Ok(mut conn) = db::connect(&dest.server_addr(), None, self.connect_timeout).await {
            let ro: Option<i64> = conn.query_first("SELECT @@read_only").await.ok().flatten();
            let _ = conn.disconnect().await;
            if ro == Some(0) {
                return None;
            }
        }
        info!(job = %self.spec.name, from = %current, to = %primary,
              "the destination shard's primary moved; writing to the new primary");
        self.progress
            .send_modify(|a| a.detail.dest_node = Some(primary.clone()));
        Some(format!("destination {primary}"))
    }
}
