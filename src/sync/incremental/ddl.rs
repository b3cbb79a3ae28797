//! Statements logged as text in the stream: DDL run at its place with the
//! names rewritten to the destination's, everything else skipped when it
//! changes nothing the job copies and refused when it might.

use super::coordinator::{Coordinator, Step};
use super::group::Txn;
use super::{Incremental, DDL_ALREADY_DONE};
use crate::db::{self, quote_ident};
use crate::dest::checkpoint;
use crate::dest::compact::TxnId;
use crate::dest::pool::{self as apply, elide};
use crate::dest::rows::Statements;
use crate::error::SyncError;
use crate::source::binlog::status::Session;
use crate::source::ddl::{self, DdlKind, Rename, Statement};
use mysql_async::prelude::*;
use tracing::{debug, info};

impl Incremental {
    /// The DDL to run on the destination for a statement, or `None` when it
    /// is out of scope or not DDL.
    pub(super) fn ddl_for_destination(
        &self,
        rename: &Rename<'_>,
        schema: &str,
        sql: &str,
        statement: &Statement,
        dialect: ddl::Dialect,
        t: &Txn,
    ) -> Result<Option<String>, SyncError> {
        let (kind, names, refs) = match statement {
            Statement::Ddl {
                temporary: true, ..
            } => return Ok(None),
            Statement::Ddl {
                kind, names, refs, ..
            } => (*kind, names, refs),
            other => return self.not_ddl(rename, schema, sql, other, dialect, t),
        };
        let mapped: Vec<Option<String>> = names.iter().map(|n| rename.map(schema, n)).collect();
        let inside = mapped.iter().filter(|m| m.is_some()).count();
        if inside == 0 {
            return Ok(None);
        }
        if inside < names.len() {
            return match kind {
                DdlKind::DropTable | DdlKind::DropView | DdlKind::DropSequence => {
                    let list: Vec<String> = mapped
                        .iter()
                        .flatten()
                        .map(|t| format!("{}.{}", quote_ident(rename.dest_db), quote_ident(t)))
                        .collect();
                    let what = match kind {
                        DdlKind::DropTable => "TABLE",
                        DdlKind::DropView => "VIEW",
                        _ => "SEQUENCE",
                    };
                    Ok(Some(format!("DROP {what} IF EXISTS {}", list.join(", "))))
                }
                _ => Err(SyncError::Definite(format!(
                    "{}: `{}` moves a table into or out of the job's scope, which the \
                     stream cannot carry; resync the job (force_fullsync)",
                    t.name(),
                    elide(sql)
                ))),
            };
        }
        if matches!(kind, DdlKind::CreateTable | DdlKind::AlterTable)
            && ddl::mentions_words(sql, dialect, &["AS", "ROW", "START"])
            && (ddl::mentions_words(sql, dialect, &["BIGINT"])
                || ddl::mentions_words(sql, dialect, &["TRX_ID"]))
        {
            return Err(apply::refused(
                &t.id,
                Some(elide(sql)),
                "system versioning: not replicated".into(),
                format!(
                    "{}: `{}` versions a table of the job by transaction id, which this \
                     version does not replicate yet (its history would be lost; tables \
                     versioned by time are); version it by time, or skip this transaction \
                     (job_skip_binlog) knowing the table's stream then stops",
                    t.name(),
                    elide(sql)
                ),
            ));
        }
        if refs.iter().any(|r| rename.map(schema, r).is_none()) {
            return Err(SyncError::Definite(format!(
                "{}: `{}` copies the definition of a table outside the job's scope; \
                 resync the job (force_fullsync)",
                t.name(),
                elide(sql)
            )));
        }
        let all: Vec<&ddl::Name> = names.iter().chain(refs.iter()).collect();
        Ok(Some(rename.rewrite(sql, dialect, schema, &all)))
    }

    /// A statement that is not DDL: skipped when it changes nothing the
    /// job copies, refused (the job holds on it) when it might.
    fn not_ddl(
        &self,
        rename: &Rename<'_>,
        schema: &str,
        sql: &str,
        other: &Statement,
        dialect: ddl::Dialect,
        t: &Txn,
    ) -> Result<Option<String>, SyncError> {
        let database_statement = matches!(other, Statement::Other(w) if w.ends_with(" DATABASE") || w.ends_with(" SCHEMA"));
        let in_db = ddl::mentions_as(sql, dialect, |w| rename.same(w, rename.src_db))
            || (schema == rename.src_db && !database_statement);
        // A table job is touched only by what names its table (or
        // its database as a whole).
        let touches = in_db
            && match rename.table {
                Some((table, _)) => {
                    ddl::mentions_as(sql, dialect, |w| rename.same(w, table)) || database_statement
                }
                None => true,
            };
        if touches && !ddl::is_dml(other) && !ddl::is_harmless(other) {
            let what = match other {
                Statement::Other(w) => w.clone(),
                _ => String::new(),
            };
            return Err(apply::refused(
                &t.id,
                Some(elide(sql)),
                format!("{what}: not a statement the job applies"),
                format!(
                    "{}: the source ran `{}` ({what}) on the job's database, which is \
                     not a statement the job applies or knows to change nothing it \
                     copies: make the same change on the destination by hand and skip \
                     the transaction (job_skip_binlog with its commit seq), copy the \
                     table again (partial_sync), or resync (force_fullsync)",
                    t.name(),
                    elide(sql)
                ),
            ));
        }
        if ddl::is_dml(other) && in_db {
            // Its rows cannot be known exactly: the job holds on it
            // (an operator skips it and repairs the rows, or
            // resyncs) rather than guess.
            return Err(apply::refused(
                &t.id,
                Some(elide(sql)),
                "logged as a statement, not as row events".into(),
                format!(
                    "{}: the source logged a statement instead of row events (`{}`): \
                     its session used binlog_format STATEMENT or MIXED. Set \
                     binlog_format=ROW on the source (globally, and reconnect the \
                     clients), then resync (force_fullsync) or skip this transaction \
                     (job_skip_binlog) and repair its rows",
                    t.name(),
                    elide(sql)
                ),
            ));
        }
        debug!(job = %self.spec.name, statement = %elide(sql), "statement skipped: not DDL in scope");
        Ok(None)
    }
}

impl Coordinator<'_> {
    /// A statement logged as text: DDL in scope is run at its place, after
    /// everything before it has committed, marked in the checkpoint first
    /// so that a crash between the two is recognised at the restart.
    pub(super) async fn on_query(
        &mut self,
        schema: String,
        sql: String,
        statement: Statement,
        session: Session,
    ) -> Result<Step, SyncError> {
        let sync = self.sync;
        let (name, dest_db) = (sync.spec.name.as_str(), sync.spec.dest.database.as_str());
        let Some(t) = self.txn.as_ref().filter(|t| !t.skip) else {
            return Ok(Step::Skip);
        };
        // DDL of a table being copied again: the copy has it.
        if let (Some(d), Statement::Ddl { names, .. }) = (&self.dropping, &statement) {
            if names
                .iter()
                .any(|n| self.rename.map(&schema, n).as_ref() == Some(d))
            {
                return Ok(Step::Skip);
            }
        }
        let Some(dest_sql) = sync.ddl_for_destination(
            &self.rename,
            &schema,
            &sql,
            &statement,
            session.dialect(),
            t,
        )?
        else {
            return Ok(Step::Skip);
        };
        let (id, label) = (t.id.clone(), t.name().to_string());
        let marker = t.gtid.map_or_else(|| t.at.to_string(), |g| g.to_string());
        // Everything before the DDL commits first, then the DDL is marked,
        // run, and (at its Commit) checkpointed past.
        if self.group.txns > 0 || !self.group.changes.is_empty() {
            self.close_group(None).await?;
        }
        self.pool.wait(self.conflicts.issued()).await?;
        let mut mark = Statements::default();
        mark.push(
            &checkpoint::upsert_sql(
                dest_db,
                name,
                &sync.checkpoint(&self.pos, self.commit_ts, Some(marker.clone())),
            ),
            None,
        );
        apply::run(self.conn, &mark)
            .await
            .map_err(|f| f.into_error(&mark, "marking a DDL statement in the checkpoint"))?;
        self.run_ddl(&dest_sql, &session, &marker, &id, &label)
            .await?;
        info!(job = %name, ddl = %dest_sql, "DDL applied");
        if let Statement::Ddl {
            kind: DdlKind::DropTable,
            names,
            ..
        } = &statement
        {
            for n in names {
                if let Some(d) = self.rename.map(&schema, n) {
                    self.windows.remove(&d);
                }
            }
        }
        self.schemas.clear();
        self.detail.ddl_applied += 1;
        sync.metrics.count_ddl(name);
        self.pending_ddl = Some(marker);
        self.force_commit = true;
        Ok(Step::Next)
    }

    /// Runs a DDL as the source's session read it (its sql_mode); one
    /// already applied before a restart (`tolerate_ddl`) is carried on from.
    async fn run_ddl(
        &mut self,
        dest_sql: &str,
        session: &Session,
        marker: &str,
        id: &TxnId,
        label: &str,
    ) -> Result<(), SyncError> {
        let dest_db = self.sync.spec.dest.database.as_str();
        let mode = session
            .set_sql()
            .map(|s| format!("{s}; "))
            .unwrap_or_default();
        // An ALTER of a versioned table ran on the source, so its session
        // kept the history (KEEP).
        let run = format!(
            "SET NAMES utf8mb4, system_versioning_alter_history = KEEP; \
             {mode}USE {}; {dest_sql}",
            quote_ident(dest_db)
        );
        let result = self.conn.query_drop(&run).await;
        let reset = self
            .conn
            .query_drop(format!(
                "{}, timestamp = DEFAULT",
                crate::dest::SESSION_SETUP
            ))
            .await;
        match result {
            Ok(()) => {}
            Err(e)
                if self.tolerate_ddl.as_deref() == Some(marker)
                    && db::server_code(&e).is_some_and(|c| DDL_ALREADY_DONE.contains(&c)) =>
            {
                info!(job = %self.sync.spec.name, ddl = %dest_sql, error = %e,
                      "DDL already applied before a restart; carrying on");
            }
            Err(e) => {
                let statement = elide(dest_sql);
                let error = e.to_string();
                return Err(
                    match SyncError::sql(format!("{label}: applying DDL `{statement}`"), e) {
                        SyncError::Definite(message) => {
                            apply::refused(id, Some(statement), error, message)
                        }
                        other => other,
                    },
                );
            }
        }
        reset.map_err(|e| SyncError::sql("restoring the destination session", e))
    }
}
