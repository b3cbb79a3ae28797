//! The compute layer's keeper, on the group's leader: every 2 s each
//! running compute node's Spider servers are checked against the shards'
//! primaries (a failover or switchover repoints them at once; this catches
//! a compute node that did not answer then), and every 10 s it is given
//! any table of the catalog it lacks (one that was down when a table was
//! made, one added).

use super::{apply, connect, servers};
use crate::cluster::Manager;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub async fn run(m: Arc<Manager>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if !m.leads() {
            continue;
        }
        round += 1;
        // Without compute nodes the store is read every 10 s only.
        if !round.is_multiple_of(5) && m.env.board.no_comps() {
            continue;
        }
        let Ok(comps) = m.env.store.comps().await else {
            continue;
        };
        let mut seen = Vec::new();
        for c in comps.iter().filter(|c| c.state != "running") {
            seen.push((
                c.cluster_id.clone(),
                c.name.clone(),
                format!("{}:{}", c.hostaddr, c.port),
                c.state.clone(),
            ));
        }
        for c in comps.iter().filter(|c| c.state == "running") {
            let at = format!("{}:{}", c.hostaddr, c.port);
            let env = &m.env;
            let work = async {
                let mut conn = connect(env, &c.cluster_id, &c.hostaddr, c.port).await?;
                let changed = servers(env, &c.cluster_id, &mut conn, &c.hostaddr, c.port).await?;
                let given = if round.is_multiple_of(5) {
                    apply::give_all(env, &c.cluster_id, &mut conn, &at).await?
                } else {
                    0
                };
                let _ = conn.disconnect().await;
                Ok::<_, crate::cluster::kind::StepError>((changed, given))
            };
            let outcome = tokio::time::timeout(Duration::from_secs(20), work).await;
            seen.push((
                c.cluster_id.clone(),
                c.name.clone(),
                at.clone(),
                match &outcome {
                    Ok(Ok(_)) => "running".to_string(),
                    Ok(Err(e)) => format!("running, not answering the keeper: {e}"),
                    Err(_) => "running, not answering the keeper within 20 s".to_string(),
                },
            ));
            match outcome {
                Ok(Ok((changed, given))) => {
                    if !changed.is_empty() || given > 0 {
                        info!(cluster_id = %c.cluster_id, comp = %at, servers = ?changed, tables_given = given,
                              "compute node brought up to date");
                    }
                }
                Ok(Err(e)) => {
                    warn!(cluster_id = %c.cluster_id, comp = %at, error = %e, "keeping the compute node")
                }
                Err(_) => {
                    warn!(cluster_id = %c.cluster_id, comp = %at, "keeping the compute node: no answer within 20 s")
                }
            }
        }
        seen.sort();
        m.env.board.comps_seen(seen);
    }
}
