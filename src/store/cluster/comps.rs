//! The compute layer's rows: the compute nodes (`cm_comps`, with how far
//! the DDL follower has read each one's binlog) and the table catalog
//! (`cm_tables`: where each table's rows live, on one shard or spread by
//! partition). The catalog is written by the DDL follower on the leader
//! (unfenced: it follows what the compute nodes already hold) and by the
//! jobs that move tables (fenced by their job).

use super::{v, ClusterStore, Holder};
use crate::store::{Stmt, StoreError};

/// A compute node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompRow {
    pub hostaddr: String,
    pub port: i64,
    pub cluster_id: String,
    pub comp_id: i64,
    pub name: String,
    /// `reserved` (being made) or `running`.
    pub state: String,
    /// The GTID position of its binlog the DDL follower has handled.
    pub ddl_pos: String,
}

/// One table of a cluster: `placement` is the JSON of
/// `crate::cluster::comps::Placement`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRow {
    pub cluster_id: String,
    pub db: String,
    pub table: String,
    pub placement: String,
    pub updated_at: i64,
}

/// An id kind of `cm_ids`: compute node ids, numbered over all clusters.
pub const COMP_ID: &str = "comp";

const INSERT_COMP: &str = "INSERT INTO cm_comps (hostaddr, port, cluster_id, comp_id, name, \
     state, ddl_pos) SELECT ?, ?, ?, ?, ?, ?, '' \
     FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const SELECT_COMPS: &str = "SELECT hostaddr, port, cluster_id, comp_id, name, state, ddl_pos \
     FROM cm_comps ORDER BY cluster_id, comp_id";
const SET_COMP_STATE: &str = "UPDATE cm_comps SET state = ? WHERE hostaddr = ? AND port = ? \
     AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)";
const DELETE_COMP: &str = "DELETE FROM cm_comps WHERE hostaddr = ? AND port = ? \
     AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)";
const DELETE_COMPS: &str = "DELETE FROM cm_comps WHERE cluster_id = ? \
     AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)";
const DELETE_TABLES: &str = "DELETE FROM cm_tables WHERE cluster_id = ? \
     AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)";
const SET_DDL_POS: &str = "UPDATE cm_comps SET ddl_pos = ? WHERE hostaddr = ? AND port = ?";
const SELECT_TABLES: &str = "SELECT cluster_id, db_name, table_name, placement, updated_at \
     FROM cm_tables ORDER BY cluster_id, db_name, table_name";
const DELETE_TABLE: &str =
    "DELETE FROM cm_tables WHERE cluster_id = ? AND db_name = ? AND table_name = ?";
const INSERT_TABLE: &str = "INSERT INTO cm_tables (cluster_id, db_name, table_name, placement, \
     updated_at) VALUES (?, ?, ?, ?, ?)";
const SET_MACHINE_TYPE: &str = "UPDATE cm_machines SET machine_type = ? WHERE hostaddr = ? \
     AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)";
const DELETE_DB_TABLES: &str = "DELETE FROM cm_tables WHERE cluster_id = ? AND db_name = ?";

fn comp_row(r: &[crate::store::SqlValue]) -> CompRow {
    CompRow {
        hostaddr: r[0].text(),
        port: r[1].int(),
        cluster_id: r[2].text(),
        comp_id: r[3].int(),
        name: r[4].text(),
        state: r[5].text(),
        ddl_pos: r[6].text(),
    }
}

impl ClusterStore {
    pub async fn comps(&self) -> Result<Vec<CompRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_COMPS, vec![])
            .await?
            .iter()
            .map(|r| comp_row(r))
            .collect())
    }

    /// Stores a compute node's row; one stored already holds.
    pub async fn insert_comp(&self, by: &Holder<'_>, c: &CompRow) -> Result<(), StoreError> {
        let row = vec![
            v(c.hostaddr.as_str()),
            v(c.port),
            v(c.cluster_id.as_str()),
            v(c.comp_id),
            v(c.name.as_str()),
            v(c.state.as_str()),
        ];
        match self.fenced(by, vec![Stmt::new(INSERT_COMP, row)]).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_comp_state(
        &self,
        by: &Holder<'_>,
        host: &str,
        port: i64,
        state: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![Stmt::new(SET_COMP_STATE, vec![v(state), v(host), v(port)])],
        )
        .await
    }

    pub async fn delete_comp(
        &self,
        by: &Holder<'_>,
        host: &str,
        port: i64,
    ) -> Result<(), StoreError> {
        self.fenced(by, vec![Stmt::new(DELETE_COMP, vec![v(host), v(port)])])
            .await
    }

    /// A deleted cluster's compute nodes and catalog.
    pub async fn delete_cluster_comps(
        &self,
        by: &Holder<'_>,
        cluster_id: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![
                Stmt::new(DELETE_COMPS, vec![v(cluster_id)]),
                Stmt::new(DELETE_TABLES, vec![v(cluster_id)]),
            ],
        )
        .await
    }

    /// How far the DDL follower has handled a compute node's binlog.
    pub async fn set_comp_ddl_pos(
        &self,
        host: &str,
        port: i64,
        pos: &str,
    ) -> Result<(), StoreError> {
        self.store
            .execute(SET_DDL_POS, vec![v(pos), v(host), v(port)])
            .await?;
        Ok(())
    }

    pub async fn tables(&self) -> Result<Vec<TableRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_TABLES, vec![])
            .await?
            .iter()
            .map(|r| TableRow {
                cluster_id: r[0].text(),
                db: r[1].text(),
                table: r[2].text(),
                placement: r[3].text(),
                updated_at: r[4].int(),
            })
            .collect())
    }

    /// Writes a table's placement (replacing the one it had).
    pub async fn put_table(&self, t: &TableRow) -> Result<(), StoreError> {
        let key = || {
            vec![
                v(t.cluster_id.as_str()),
                v(t.db.as_str()),
                v(t.table.as_str()),
            ]
        };
        let mut insert = key();
        insert.push(v(t.placement.as_str()));
        insert.push(v(chrono::Utc::now().timestamp_millis()));
        self.store
            .transaction(vec![
                Stmt::new(DELETE_TABLE, key()),
                Stmt::new(INSERT_TABLE, insert),
            ])
            .await
    }

    pub async fn delete_table(
        &self,
        cluster_id: &str,
        db: &str,
        table: &str,
    ) -> Result<(), StoreError> {
        self.store
            .execute(DELETE_TABLE, vec![v(cluster_id), v(db), v(table)])
            .await?;
        Ok(())
    }

    /// A dropped database's tables.
    pub async fn delete_db_tables(&self, cluster_id: &str, db: &str) -> Result<(), StoreError> {
        self.store
            .execute(DELETE_DB_TABLES, vec![v(cluster_id), v(db)])
            .await?;
        Ok(())
    }

    /// A machine's types (`storage`, `computer` or `storage,computer`).
    pub async fn set_machine_type(
        &self,
        by: &Holder<'_>,
        host: &str,
        machine_type: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![Stmt::new(SET_MACHINE_TYPE, vec![v(machine_type), v(host)])],
        )
        .await
    }

    /// Records an ended job of this manager's own (a DDL statement the
    /// compute layer refused): `list_jobs` shows it like any job.
    pub async fn record_ended(&self, row: super::JobRow) -> Result<super::JobRow, StoreError> {
        self.accept(row, &super::Claims::default()).await
    }
}
