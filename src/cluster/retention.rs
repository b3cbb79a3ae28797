//! Scheduled cluster backups (`[backup] full_every`) and retention
//! (`keep_days`, `keep_full`), on the group's leader, every 10 s.
//!
//! - A cluster whose newest backup is older than `full_every` gets a
//!   `manual_backup_cluster` job, its `job_id` the period's number, so two
//!   leaders in turn never start two for one period.
//! - Retention removes a backup's manifest first (from then on it does not
//!   exist), then its objects; then the archived binlog wholly at or before
//!   the oldest kept backup's GTID position, shard by shard, and the gaps
//!   before it. A backup is never left without the binlog after it, nor a
//!   binlog without a backup before it; while a cluster has no backup its
//!   archive is kept whole.

use super::backups::{self, Manifest};
use super::Manager;
use crate::archive::Pos;
use crate::storage::Storage;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub async fn run(m: Arc<Manager>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(s) = m.env.storage.clone() else {
        return;
    };
    let b = m.env.settings.backup.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if !m.leads() {
            continue;
        }
        let Ok(clusters) = m.env.store.clusters().await else {
            continue;
        };
        for c in clusters {
            let id = &c.cluster_id;
            let manifests = match backups::manifests(&s, id).await {
                Ok(list) => list,
                Err(e) => {
                    warn!(cluster_id = %id, error = %e, "the backup storage");
                    continue;
                }
            };
            let now = chrono::Utc::now().timestamp();
            logical_due(&m, &s, id).await;
            if let Some(every) = b.full_every {
                let every = every.as_secs() as i64;
                let newest = manifests.last().map_or(0, |m| m.finished_at);
                if now - newest >= every {
                    schedule(&m, id, now / every).await;
                }
            }
            if b.keep_days.is_some() || b.keep_full.is_some() {
                let gone = to_prune(&manifests, now, b.keep_days, b.keep_full);
                if !gone.is_empty() {
                    if let Err(e) = prune(&m, &s, id, &manifests, &gone).await {
                        warn!(cluster_id = %id, error = %e, "retention");
                    }
                }
            }
        }
    }
}

/// Starts the day's `logical_backup` of each scheduled table of a cluster
/// inside its window (its `job_id` names the table and the day: one a day).
async fn logical_due(m: &Arc<Manager>, s: &Storage, cluster_id: &str) {
    let key = super::logical::schedules_key(cluster_id);
    let Ok(Some(_)) = s.size(&key).await else {
        return;
    };
    let Ok(bytes) = s.get(&key).await else {
        return;
    };
    let schedules: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    let now = chrono::Local::now();
    let second = chrono::Timelike::num_seconds_from_midnight(&now);
    for (db_table, window) in schedules {
        let Ok(w) = super::logical::parse_window(&window) else {
            continue;
        };
        if !super::logical::in_window(second, w) {
            continue;
        }
        let Ok((db, t)) = super::logical::parse_table(&db_table) else {
            continue;
        };
        let newest = super::logical::manifests(s, cluster_id, &db, &t)
            .await
            .ok()
            .and_then(|l| l.last().map(|x| x.finished_at))
            .unwrap_or(0);
        // Once a day: not again while the last one is younger than 20 h.
        if now.timestamp() - newest < 20 * 3600 {
            continue;
        }
        let Some(kind) = m.kind("logical_backup") else {
            return;
        };
        let mut paras = serde_json::Map::new();
        paras.insert("cluster_id".into(), serde_json::json!(cluster_id));
        paras.insert(
            "backup".into(),
            serde_json::json!([{"db_table": db_table, "backup_time": window}]),
        );
        let e = super::emit::Envelope {
            version: "1.0".into(),
            job_id: format!(
                "scheduled-logical-{cluster_id}-{db_table}-{}",
                now.format("%Y%m%d")
            ),
            job_type: "logical_backup".into(),
            user_name: "scheduler".into(),
            paras,
        };
        match m.accept(&e, kind.as_ref()).await {
            Ok(_) => info!(cluster_id, db_table = %db_table, "a scheduled logical backup"),
            Err(r) => {
                warn!(cluster_id, db_table = %db_table, error = %r.info, "a scheduled logical backup was not started")
            }
        }
    }
}

async fn schedule(m: &Arc<Manager>, cluster_id: &str, period: i64) {
    let Some(kind) = m.kind("manual_backup_cluster") else {
        return;
    };
    let mut paras = serde_json::Map::new();
    paras.insert("cluster_id".into(), serde_json::json!(cluster_id));
    let e = super::emit::Envelope {
        version: "1.0".into(),
        job_id: format!("scheduled-backup-{cluster_id}-{period}"),
        job_type: "manual_backup_cluster".into(),
        user_name: "scheduler".into(),
        paras,
    };
    match m.accept(&e, kind.as_ref()).await {
        Ok(_) => info!(cluster_id, job = %e.job_id, "a scheduled cluster backup"),
        Err(r) => warn!(cluster_id, error = %r.info, "a scheduled cluster backup was not started"),
    }
}

/// The backups retention removes (their ids): older than `keep_days`, or
/// beyond the newest `keep_full`; never the newest one.
pub fn to_prune(
    manifests: &[Manifest],
    now: i64,
    keep_days: Option<u64>,
    keep_full: Option<u64>,
) -> Vec<String> {
    let n = manifests.len();
    let keep_full = keep_full.unwrap_or(1).max(1) as usize;
    manifests
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            let newer = n - 1 - i;
            let old = keep_days.is_none_or(|d| now - m.finished_at > d as i64 * 86_400);
            newer >= keep_full && old
        })
        .map(|(_, m)| m.backup_id.clone())
        .collect()
}

async fn prune(
    m: &Arc<Manager>,
    s: &Storage,
    cluster_id: &str,
    manifests: &[Manifest],
    gone: &[String],
) -> Result<(), String> {
    for id in gone {
        s.delete(&backups::manifest_key(cluster_id, id)).await?;
        let prefix = format!("{}{id}/", backups::backups_prefix(cluster_id));
        for o in s.list(&prefix).await? {
            s.delete(&o.key).await?;
        }
        info!(cluster_id, backup_id = %id, "retention removed a backup");
    }
    let Some(oldest) = manifests.iter().find(|x| !gone.contains(&x.backup_id)) else {
        return Ok(());
    };
    let _ = m;
    for b in &oldest.shards {
        let keep_from = Pos::parse(&b.gtid)?;
        let a = backups::archive(s, cluster_id, b.shard_id).await?;
        for seg in &a.segments {
            // Wholly at or before the oldest kept backup: no restore uses it.
            if Pos::parse(&seg.end).is_ok_and(|end| keep_from.covers(&end))
                && !end_is_empty(&seg.end)
            {
                let meta = format!("{}.json", seg.key.trim_end_matches(".binlog"));
                s.delete(&meta).await?;
                s.delete(&seg.key).await?;
            }
        }
        let prefix = crate::archive::shard_prefix(cluster_id, b.shard_id);
        for g in &a.gaps {
            if Pos::parse(&g.resumed_at).is_ok_and(|r| keep_from.covers(&r)) {
                for l in s.list(&prefix).await? {
                    if l.key.contains("/gap-")
                        && l.key.ends_with(&format!("gap-{}.json", g.detected_at))
                    {
                        s.delete(&l.key).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn end_is_empty(end: &str) -> bool {
    end.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, finished_at: i64) -> Manifest {
        Manifest {
            format: 1,
            backup_id: id.into(),
            cluster_id: "1".into(),
            job_id: id.into(),
            started_at: finished_at,
            finished_at,
            compression: "gzip".into(),
            encrypted: false,
            shards: vec![],
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_what_is_young() {
        let day = 86_400;
        let list = vec![
            m("a", 0),
            m("b", 5 * day),
            m("c", 9 * day),
            m("d", 10 * day),
        ];
        let now = 10 * day + 10;
        assert_eq!(to_prune(&list, now, Some(3), None), vec!["a", "b"]);
        assert_eq!(to_prune(&list, now, Some(3), Some(3)), vec!["a"]);
        assert_eq!(to_prune(&list, now, None, Some(2)), vec!["a", "b"]);
        // Never the newest, however old.
        assert_eq!(
            to_prune(&list, 100 * day, Some(1), None),
            vec!["a", "b", "c"]
        );
        assert!(to_prune(&[], now, Some(1), Some(1)).is_empty());
    }
}
