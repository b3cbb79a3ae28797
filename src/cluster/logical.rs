//! Logical backups of single tables, what `logical_backup` writes and
//! `logical_restore` reads: a table as of one GTID position (a consistent
//! snapshot through the data path's snapshot and chunk planner, its chunks
//! read side by side on several snapshot connections), stored under
//! `logical/cluster_C/DB.TABLE/ID/` as
//!
//! - `schema.sql`: the table's `CREATE TABLE`;
//! - `chunk-NNNN.tsv.gz` (`.enc` when the cluster's backups are
//!   encrypted): rows in `LOAD DATA`'s default format (tab-separated,
//!   `\`-escaped, `\N` for NULL, bytes as stored), gzip; a DBA loads one
//!   without this service with `zcat chunk-0000.tsv.gz | mariadb -e "LOAD
//!   DATA LOCAL INFILE '/dev/stdin' INTO TABLE db.t CHARACTER SET binary"`;
//! - `manifest.json`, written last: the GTID position, the time, the
//!   columns, every object with its size, SHA-256 and rows. A backup
//!   without it does not exist.

use super::nodes;
use super::Env;
use crate::db::{quote_ident, ServerAddr};
use crate::storage::{Cipher, Storage, Stored};
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(flatten)]
    pub object: Stored,
    pub rows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub cluster_id: String,
    pub shard_id: i64,
    pub database: String,
    pub table: String,
    /// The GTID position of the snapshot.
    pub gtid: String,
    pub finished_at: i64,
    /// Column names in chunk order, each with whether it is BIT.
    pub columns: Vec<(String, bool)>,
    pub schema: Stored,
    pub chunks: Vec<Chunk>,
    pub rows: u64,
    #[serde(default)]
    pub encrypted: bool,
}

/// Reads `db.table`; the seed's PostgreSQL form is refused naming ours.
pub fn parse_table(text: &str) -> Result<(String, String), String> {
    if text.contains("_$$_") {
        return Err(format!(
            "db_table {text:?} is PostgreSQL's form (database_$$_schema.table): name a MariaDB \
             table as db.table"
        ));
    }
    match text.split_once('.') {
        Some((d, t)) if !d.is_empty() && !t.is_empty() && !t.contains('.') => {
            Ok((d.to_string(), t.to_string()))
        }
        _ => Err(format!("db_table {text:?}: db.table")),
    }
}

/// Reads `HH:MM:SS-HH:MM:SS`; the window's bounds in seconds of the day.
pub fn parse_window(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("backup_time {text:?}: HH:MM:SS-HH:MM:SS");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let secs = |t: &str| -> Result<u32, String> {
        let t = chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M:%S").map_err(|_| bad())?;
        Ok(chrono::Timelike::num_seconds_from_midnight(&t))
    };
    let (a, b) = (secs(a)?, secs(b)?);
    if a == b {
        return Err(format!("backup_time {text:?}: an empty window"));
    }
    Ok((a, b))
}

/// Whether `now` (seconds of the day) is inside the window (which may
/// wrap past midnight).
pub fn in_window(now: u32, (a, b): (u32, u32)) -> bool {
    if a < b {
        a <= now && now < b
    } else {
        now >= a || now < b
    }
}

pub fn table_prefix(cluster_id: &str, database: &str, table: &str) -> String {
    format!("logical/cluster_{cluster_id}/{database}.{table}/")
}

pub fn schedules_key(cluster_id: &str) -> String {
    format!("logical/cluster_{cluster_id}/schedules.json")
}

/// Every logical backup of a table, oldest first.
pub async fn manifests(
    s: &Storage,
    cluster_id: &str,
    database: &str,
    table: &str,
) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    for l in s.list(&table_prefix(cluster_id, database, table)).await? {
        if l.key.ends_with("/manifest.json") {
            let m: Manifest = serde_json::from_slice(&s.get(&l.key).await?)
                .map_err(|e| format!("the manifest {} is not valid: {e}", l.key))?;
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.finished_at);
    Ok(out)
}

/// The shard of `cluster_id` whose primary holds `db.table`.
pub async fn shard_of(
    env: &Env,
    cluster_id: &str,
    database: &str,
    table: &str,
) -> Result<Option<(i64, crate::store::cluster::InstanceRow)>, String> {
    let (user, pw) = nodes::password(env, cluster_id)
        .await
        .map_err(|e| e.to_string())?;
    let rows = env.store.instances().await.map_err(|e| e.to_string())?;
    for p in rows
        .into_iter()
        .filter(|i| i.cluster_id == cluster_id && i.role == "primary")
    {
        let mut c = nodes::connect(&p.hostaddr, p.port, &user, &pw)
            .await
            .map_err(|e| e.to_string())?;
        let n: Option<i64> = c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, table),
            )
            .await
            .map_err(|e| format!("{}:{}: {e}", p.hostaddr, p.port))?;
        let _ = c.disconnect().await;
        if n.unwrap_or(0) > 0 {
            return Ok(Some((p.shard, p)));
        }
    }
    Ok(None)
}

/// What a dump is told.
pub struct Dump<'a> {
    pub storage: &'a Storage,
    pub cipher: Option<&'a Cipher>,
    pub cluster_id: &'a str,
    pub shard_id: i64,
    pub host: &'a str,
    pub port: i64,
    pub user: &'a str,
    pub password: &'a crate::secret::Secret,
    pub database: &'a str,
    pub table: &'a str,
    pub backup_id: &'a str,
}

/// Snapshot connections a dump reads with.
const READERS: usize = 2;
/// Rows a chunk holds about.
const CHUNK_ROWS: u64 = 200_000;

async fn put(
    s: &Storage,
    cipher: Option<&Cipher>,
    key: &str,
    bytes: Vec<u8>,
) -> Result<Stored, String> {
    let bytes = match cipher {
        Some(c) => c.seal_all(&bytes)?,
        None => bytes,
    };
    let sha256 = crate::storage::sha256(&bytes);
    let n = bytes.len() as u64;
    s.put(key, bytes).await?;
    Ok(Stored {
        key: key.to_string(),
        bytes: n,
        sha256,
    })
}

/// Dumps the table as of one snapshot; its manifest, written last.
pub async fn dump(d: &Dump<'_>) -> Result<Manifest, String> {
    let tls = crate::tls::TlsOptions::default();
    let addr = ServerAddr {
        host: d.host,
        port: d.port as u16,
        user: d.user,
        password: d.password,
        tls: &tls,
    };
    let mut set = crate::source::snapshot::open(&addr, READERS, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{}:{}: {e}", d.host, d.port))?;
    let gtid = set.gtid.to_string();
    let info = crate::source::schema::tables(&mut set.conns[0], d.database, Some(d.table))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| format!("no table {}.{}", d.database, d.table))?;
    let plan = crate::source::chunks::plan(&mut set.conns[0], d.database, &info, CHUNK_ROWS)
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!(
        "{}{}/",
        table_prefix(d.cluster_id, d.database, d.table),
        d.backup_id
    );
    let suffix = if d.cipher.is_some() { ".enc" } else { "" };
    let schema = put(
        d.storage,
        d.cipher,
        &format!("{prefix}schema.sql{suffix}"),
        info.create_sql.clone().into_bytes(),
    )
    .await?;
    let select: Vec<String> = info.columns.iter().map(|c| c.select_expr()).collect();
    let from = format!("{}.{}", quote_ident(d.database), quote_ident(d.table));
    // Each reader takes every READERS-th chunk.
    let mut work = Vec::new();
    for (r, conn) in set.conns.iter_mut().enumerate() {
        let mine: Vec<(usize, &crate::change::ChunkBounds)> = plan
            .iter()
            .enumerate()
            .filter(|(i, _)| i % READERS == r)
            .collect();
        let (select, from, prefix, info) = (&select, &from, &prefix, &info);
        work.push(async move {
            let mut out = Vec::new();
            for (i, bounds) in mine {
                let mut sql = format!("SELECT {} FROM {from}", select.join(", ")).into_bytes();
                if let Some(f) = crate::source::chunks::chunk_filter(&info.key, bounds) {
                    sql.extend_from_slice(b" WHERE ");
                    sql.extend_from_slice(&f);
                }
                let rows: Vec<mysql_async::Row> = conn
                    .query(sql)
                    .await
                    .map_err(|e| format!("reading {from}: {e}"))?;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let mut line = Vec::new();
                for row in &rows {
                    line.clear();
                    let fields: Vec<Option<Vec<u8>>> = row
                        .clone()
                        .unwrap()
                        .into_iter()
                        .map(|v| match v {
                            mysql_async::Value::NULL => None,
                            mysql_async::Value::Bytes(b) => Some(b),
                            other => Some(other.as_sql(true).into_bytes()),
                        })
                        .collect();
                    crate::dest::load::push_row(&mut line, &fields);
                    gz.write_all(&line).map_err(|e| e.to_string())?;
                }
                let bytes = gz.finish().map_err(|e| e.to_string())?;
                let stored = put(
                    d.storage,
                    d.cipher,
                    &format!("{prefix}chunk-{i:04}.tsv.gz{suffix}"),
                    bytes,
                )
                .await?;
                out.push((
                    i,
                    Chunk {
                        object: stored,
                        rows: rows.len() as u64,
                    },
                ));
            }
            Ok::<_, String>(out)
        });
    }
    let mut chunks: Vec<(usize, Chunk)> = futures_util::future::try_join_all(work)
        .await?
        .into_iter()
        .flatten()
        .collect();
    chunks.sort_by_key(|(i, _)| *i);
    for c in set.conns.drain(..) {
        let _ = c.disconnect().await;
    }
    let chunks: Vec<Chunk> = chunks.into_iter().map(|(_, c)| c).collect();
    let m = Manifest {
        format: 1,
        backup_id: d.backup_id.to_string(),
        cluster_id: d.cluster_id.to_string(),
        shard_id: d.shard_id,
        database: d.database.to_string(),
        table: d.table.to_string(),
        gtid,
        finished_at: chrono::Utc::now().timestamp(),
        columns: info
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.data_type == "bit"))
            .collect(),
        schema,
        rows: chunks.iter().map(|c| c.rows).sum(),
        chunks,
        encrypted: d.cipher.is_some(),
    };
    for o in std::iter::once(&m.schema).chain(m.chunks.iter().map(|c| &c.object)) {
        if d.storage.size(&o.key).await? != Some(o.bytes) {
            return Err(format!("{} was not stored whole", o.key));
        }
    }
    d.storage
        .put(
            &format!("{prefix}manifest.json"),
            serde_json::to_vec_pretty(&m).unwrap_or_default(),
        )
        .await?;
    Ok(m)
}

/// An object read back whole, checked against its hash, opened.
pub async fn fetch(s: &Storage, cipher: Option<&Cipher>, o: &Stored) -> Result<Vec<u8>, String> {
    let bytes = s.get(&o.key).await?;
    let sha = crate::storage::sha256(&bytes);
    if bytes.len() as u64 != o.bytes || sha != o.sha256 {
        return Err(format!(
            "the backup object {} is corrupt or incomplete in the storage",
            o.key
        ));
    }
    match (o.key.ends_with(".enc"), cipher) {
        (true, Some(c)) => c.open_all(&bytes).map_err(|e| format!("{}: {e}", o.key)),
        (true, None) => Err(format!(
            "{} is encrypted: the restore needs its backup_encrypt_key",
            o.key
        )),
        (false, _) => Ok(bytes),
    }
}

/// Loads the backup's rows into `database.table` (which exists, empty).
pub async fn load(
    conn: &mut mysql_async::Conn,
    s: &Storage,
    cipher: Option<&Cipher>,
    m: &Manifest,
    database: &str,
    table: &str,
) -> Result<u64, String> {
    use std::io::Read;
    let statement = crate::dest::load::statement(database, table, &m.columns);
    let mut loaded = 0;
    for c in &m.chunks {
        let gz = fetch(s, cipher, &c.object).await?;
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .map_err(|e| format!("{} does not decompress: {e}", c.object.key))?;
        conn.set_infile_handler(async move {
            Ok(futures_util::StreamExt::boxed(futures_util::stream::iter(
                vec![Ok(bytes::Bytes::from(plain))],
            )))
        });
        conn.query_drop(&statement)
            .await
            .map_err(|e| format!("loading {}: {e}", c.object.key))?;
        loaded += c.rows;
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_windows() {
        assert_eq!(
            parse_table("shop.orders").unwrap(),
            ("shop".into(), "orders".into())
        );
        let e = parse_table("postgres_$$_public.t1").unwrap_err();
        assert!(e.contains("db.table"), "{e}");
        assert!(parse_table("orders").is_err());
        assert!(parse_table("a.b.c").is_err());
        assert_eq!(parse_window("01:00:00-02:00:00").unwrap(), (3600, 7200));
        assert!(parse_window("1-2").is_err());
        assert!(parse_window("01:00:00-01:00:00").is_err());
        assert!(in_window(3700, (3600, 7200)));
        assert!(!in_window(7200, (3600, 7200)));
        // A window over midnight.
        assert!(in_window(100, (23 * 3600, 3600)));
        assert!(!in_window(5000, (23 * 3600, 3600)));
    }
}
