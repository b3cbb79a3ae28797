//! What the backup storage holds of each cluster, read from the storage
//! itself (it outlives the manager's store): the backups (a backup is its
//! manifest, written last: objects without one are no backup and are
//! never listed or used), each shard's archived binlog segments, its gaps,
//! and from them the times a cluster can be restored to.
//!
//! A cluster can be restored to a time T when, for every shard, a backup
//! finished at or before T and the archive holds every transaction from
//! that backup's GTID position up to T without a gap (its segments chain,
//! and the archiver had read the primary's binlog at least up to T).

use crate::archive::{Pos, SegmentMeta};
use crate::storage::{Storage, Stored};
use serde::{Deserialize, Serialize};

/// A backup's manifest (`backups/cluster_C/ID/manifest.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub cluster_id: String,
    pub job_id: String,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub compression: String,
    /// Every object sealed with the cluster's backup key.
    #[serde(default)]
    pub encrypted: bool,
    pub shards: Vec<ShardBackup>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardBackup {
    pub shard_id: i64,
    /// The node it was taken on (`host:port`).
    pub node: String,
    /// The GTID position it holds.
    pub gtid: String,
    pub raw_bytes: u64,
    pub objects: Vec<Stored>,
}

/// Where the archiver had read a shard's primary up to, and when
/// (`binlogs/cluster_C/shard_S/head.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub end: String,
    pub through_ts: i64,
}

/// Binlogs lost before they were archived (`…/gap-TS.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub after: String,
    pub resumed_at: String,
    pub detected_at: i64,
    pub why: String,
}

pub fn backups_prefix(cluster_id: &str) -> String {
    format!("backups/cluster_{cluster_id}/")
}

pub fn manifest_key(cluster_id: &str, backup_id: &str) -> String {
    format!("{}{backup_id}/manifest.json", backups_prefix(cluster_id))
}

/// Every backup of a cluster (with a manifest), oldest first.
pub async fn manifests(s: &Storage, cluster_id: &str) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    for l in s.list(&backups_prefix(cluster_id)).await? {
        if !l.key.ends_with("/manifest.json") {
            continue;
        }
        let bytes = s.get(&l.key).await?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the manifest {} is not valid: {e}", l.key))?;
        out.push(m);
    }
    out.sort_by_key(|m| m.finished_at);
    Ok(out)
}

/// A shard's archive: its segments (in commit order), gaps and head.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    pub segments: Vec<SegmentMeta>,
    pub gaps: Vec<Gap>,
    pub head: Option<Head>,
}

pub async fn archive(s: &Storage, cluster_id: &str, shard: i64) -> Result<Archive, String> {
    let prefix = crate::archive::shard_prefix(cluster_id, shard);
    let mut a = Archive::default();
    for l in s.list(&prefix).await? {
        let name = l.key.rsplit('/').next().unwrap_or_default();
        if name == "head.json" {
            a.head = serde_json::from_slice(&s.get(&l.key).await?).ok();
        } else if name.starts_with("gap-") && name.ends_with(".json") {
            if let Ok(g) = serde_json::from_slice(&s.get(&l.key).await?) {
                a.gaps.push(g);
            }
        } else if name.ends_with(".json") {
            let m: SegmentMeta = serde_json::from_slice(&s.get(&l.key).await?)
                .map_err(|e| format!("the segment meta {} is not valid: {e}", l.key))?;
            a.segments.push(m);
        }
    }
    a.segments
        .sort_by_key(|m| (m.first_ts, m.first.domain, m.first.seq));
    Ok(a)
}

/// Runs of segments that chain: (start position, end position, end time).
fn runs(a: &Archive) -> Vec<(Pos, Pos, i64)> {
    let mut out: Vec<(Pos, Pos, i64)> = Vec::new();
    for m in &a.segments {
        let (Ok(start), Ok(end)) = (Pos::parse(&m.start), Pos::parse(&m.end)) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.1 == start => {
                last.1 = end;
                last.2 = last.2.max(m.last_ts);
            }
            // A segment written again after a crash (the same first GTID).
            Some(last) if last.1.covers(&end) => {}
            _ => out.push((start, end, m.last_ts)),
        }
    }
    // The head says how far the archiver had read, even without writes.
    if let (Some(h), Some(last)) = (&a.head, out.last_mut()) {
        if Pos::parse(&h.end).is_ok_and(|e| e == last.1) {
            last.2 = last.2.max(h.through_ts);
        }
    }
    out
}

/// The times (unix seconds, inclusive) one shard can be restored to from
/// `backups` (its backup's position and finish time each).
pub fn shard_windows(backups: &[(Pos, i64)], a: &Archive) -> Vec<(i64, i64)> {
    let runs = runs(a);
    let head = a
        .head
        .as_ref()
        .and_then(|h| Some((Pos::parse(&h.end).ok()?, h.through_ts)));
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (gtid, finished) in backups {
        let inside = runs
            .iter()
            .find(|(start, end, _)| gtid.covers(start) && end.covers(gtid))
            .map(|r| r.2);
        // A backup after everything archived: restorable while nothing
        // was written after it (the head read up to it).
        let end = inside.or_else(|| {
            head.as_ref()
                .filter(|(e, _)| *e == *gtid)
                .map(|(_, through)| *through)
        });
        if let Some(end) = end {
            if end >= *finished {
                out.push((*finished, end));
            }
        }
    }
    merge(out)
}

fn merge(mut w: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    w.sort();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in w {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The times every shard can be restored to.
pub fn intersect(shards: &[Vec<(i64, i64)>]) -> Vec<(i64, i64)> {
    let Some(first) = shards.first() else {
        return Vec::new();
    };
    let mut acc = first.clone();
    for other in &shards[1..] {
        let mut next = Vec::new();
        for (a, b) in &acc {
            for (c, d) in other {
                let (lo, hi) = ((*a).max(*c), (*b).min(*d));
                if lo <= hi {
                    next.push((lo, hi));
                }
            }
        }
        acc = merge(next);
    }
    acc
}

/// A unix time in the service's time zone, as `restore_time` is written.
pub fn local_time(t: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Reads `restore_time` ("YYYY-MM-DD HH:MM:SS", the service's time zone).
pub fn parse_local_time(text: &str) -> Result<i64, String> {
    use chrono::TimeZone;
    let naive =
        chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").map_err(|_| {
            format!("restore_time {text:?}: \"YYYY-MM-DD HH:MM:SS\" (the service's time zone)")
        })?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp())
        .ok_or_else(|| format!("restore_time {text:?} does not exist in the service's time zone"))
}

/// Windows as text: `FROM .. TO, …` in the service's time zone.
pub fn describe(w: &[(i64, i64)]) -> String {
    if w.is_empty() {
        return "none".into();
    }
    w.iter()
        .map(|(a, b)| format!("{} .. {}", local_time(*a), local_time(*b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The backup storage the settings name (a failure to open it is said,
/// and backup jobs are refused with it).
pub fn open_storage(settings: &crate::config::ClusterSettings) -> Option<crate::storage::Storage> {
    let url = settings.backup.storage.as_deref()?;
    match crate::storage::Storage::open(url, settings.backup.s3.as_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the backup storage cannot be used");
            None
        }
    }
}

/// A cluster's backups (finish time and GTID position per shard) and the
/// windows they make with the archive.
pub struct Catalog {
    pub manifests: Vec<Manifest>,
    pub archives: Vec<(i64, Archive)>,
    pub windows: Vec<(i64, i64)>,
}

pub async fn catalog(s: &Storage, cluster_id: &str, shards: &[i64]) -> Result<Catalog, String> {
    let manifests = manifests(s, cluster_id).await?;
    let mut archives = Vec::new();
    let mut per_shard = Vec::new();
    for shard in shards {
        let a = archive(s, cluster_id, *shard).await?;
        let backups: Vec<(Pos, i64)> = manifests
            .iter()
            .filter_map(|m| {
                let b = m.shards.iter().find(|b| b.shard_id == *shard)?;
                Some((Pos::parse(&b.gtid).ok()?, m.finished_at))
            })
            .collect();
        per_shard.push(shard_windows(&backups, &a));
        archives.push((*shard, a));
    }
    Ok(Catalog {
        manifests,
        archives,
        windows: intersect(&per_shard),
    })
}

/// The shards of a cluster, by the manager's rows.
pub async fn shards_of(
    env: &super::Env,
    cluster_id: &str,
) -> Result<Vec<i64>, crate::store::StoreError> {
    let mut shards: Vec<i64> = env
        .store
        .instances()
        .await?
        .into_iter()
        .filter(|i| i.cluster_id == cluster_id)
        .map(|i| i.shard)
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

fn window_json(w: &[(i64, i64)]) -> serde_json::Value {
    serde_json::Value::Array(
        w.iter()
            .map(|(a, b)| serde_json::json!({"from": local_time(*a), "to": local_time(*b)}))
            .collect(),
    )
}

/// `get_backup_storage`: the seed's list, and per cluster its backups,
/// restorable windows, archive and gaps.
pub async fn view(env: &super::Env) -> Result<serde_json::Value, super::emit::Refused> {
    use serde_json::json;
    let Some(s) = &env.storage else {
        return Ok(json!({"list_backup_storage": [], "clusters": [],
                         "note": "no backup storage: set [backup] storage in conf/syncer.toml or --backup-storage"}));
    };
    let (host, port, stype) = s.location.describe();
    let refuse = |e: String| super::emit::Refused {
        code: super::emit::codes::UNREACHABLE,
        info: format!("the backup storage {}: {e}", s.url),
    };
    let clusters = env
        .store
        .clusters()
        .await
        .map_err(super::nodes::store_err)?;
    let mut out = Vec::new();
    for c in clusters {
        let shards = shards_of(env, &c.cluster_id)
            .await
            .map_err(super::nodes::store_err)?;
        let cat = catalog(s, &c.cluster_id, &shards).await.map_err(refuse)?;
        let backups: Vec<_> = cat
            .manifests
            .iter()
            .map(|m| {
                json!({"backup_id": m.backup_id, "job_id": m.job_id,
                       "time": local_time(m.finished_at),
                       "bytes": m.shards.iter().flat_map(|b| &b.objects).map(|o| o.bytes).sum::<u64>(),
                       "shards": m.shards.iter().map(|b| json!({"shard_id": b.shard_id, "node": b.node,
                           "gtid": b.gtid, "objects": b.objects.len()})).collect::<Vec<_>>()})
            })
            .collect();
        let archive: Vec<_> = cat
            .archives
            .iter()
            .map(|(shard, a)| {
                json!({"shard_id": shard, "segments": a.segments.len(),
                       "end": a.head.as_ref().map(|h| h.end.clone()).unwrap_or_default(),
                       "through": a.head.as_ref().map(|h| local_time(h.through_ts)).unwrap_or_default(),
                       "gaps": a.gaps.iter().map(|g| json!({"after": g.after, "resumed_at": g.resumed_at,
                            "detected": local_time(g.detected_at), "why": g.why})).collect::<Vec<_>>()})
            })
            .collect();
        out.push(json!({"cluster_id": c.cluster_id, "backups": backups,
                        "restorable": window_json(&cat.windows), "archive": archive}));
    }
    Ok(json!({
        "list_backup_storage": [{"hostaddr": host, "name": "backup_storage", "port": port, "stype": stype}],
        "clusters": out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Gtid;

    fn seg(first: u64, last: u64, first_ts: i64, last_ts: i64) -> SegmentMeta {
        SegmentMeta {
            key: format!("k{first}"),
            first: Gtid {
                domain: 0,
                server: 1,
                seq: first,
            },
            last: Gtid {
                domain: 0,
                server: 1,
                seq: last,
            },
            start: format!("0-1-{}", first - 1),
            end: format!("0-1-{last}"),
            first_ts,
            last_ts,
            transactions: last - first + 1,
            bytes: 0,
            sha256: String::new(),
            from: String::new(),
            encrypted: false,
        }
    }

    fn pos(n: u64) -> Pos {
        Pos::parse(&format!("0-1-{n}")).unwrap()
    }

    #[test]
    fn windows_run_from_a_backup_to_the_end_of_its_chain() {
        let a = Archive {
            segments: vec![
                seg(1, 10, 100, 110),
                seg(11, 20, 111, 120),
                seg(31, 40, 140, 150),
            ],
            gaps: vec![],
            head: Some(Head {
                end: "0-1-40".into(),
                through_ts: 160,
            }),
        };
        // Backup at 5 (finished 105): restorable to 120, then the gap.
        assert_eq!(shard_windows(&[(pos(5), 105)], &a), vec![(105, 120)]);
        // A backup inside the gap: nothing chains from it.
        assert_eq!(shard_windows(&[(pos(25), 130)], &a), vec![]);
        // A backup after the gap: to the head's time.
        assert_eq!(shard_windows(&[(pos(33), 145)], &a), vec![(145, 160)]);
        assert_eq!(
            shard_windows(&[(pos(5), 105), (pos(33), 145)], &a),
            vec![(105, 120), (145, 160)]
        );
        assert_eq!(
            intersect(&[vec![(105, 120), (145, 160)], vec![(100, 150)]]),
            vec![(105, 120), (145, 150)]
        );
    }
}
