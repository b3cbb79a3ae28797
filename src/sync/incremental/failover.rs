//! Following a failover: when the source is gone, the node that took over
//! among those it reported, if it holds everything the job applied.

use super::Incremental;
use crate::db;
use crate::dest::checkpoint;
use crate::source::topology;
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
        for node in topo.candidates() {
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
}
