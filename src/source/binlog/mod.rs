//! The binlog reader: a replica connection to the source that turns its
//! binlog into [`SourceEvent`]s, the only thing the applier sees of it.
//!
//! It starts after a position: a MariaDB GTID position through
//! `@slave_connect_state` (so any server of the topology holding those
//! transactions can serve it), or a binlog coordinate where the source has no
//! GTIDs. It asks for a heartbeat every second while the source is idle and
//! treats 5 s of silence as a dead connection.
//!
//! Event groups: a MariaDB GTID event opens a group, an XID event or a
//! `COMMIT` statement ends it; a group flagged *standalone* (DDL) has no end
//! event, so the reader ends it after its statement. Every event is either
//! turned into a [`SourceEvent`], or known not to matter to a ROW binlog
//! (format description, GTID lists, binlog checkpoints, statement-context
//! events), or stops the job with an error naming it: nothing is dropped
//! unseen.
//!
//! Row events are decoded only for tables in the job's scope.

pub mod compressed;
pub mod decode;
pub mod mariadb;
pub mod retention;
pub mod status;

use crate::db::{self, ConnectError, ServerAddr};
use crate::error::Kind;
use crate::position::{BinlogCoord, MariaGtid, Position};
use crate::source::ddl::{self, Statement};
use decode::{RowChange, RowOp, TableMap};
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the source did, in binlog order.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// A transaction starts; `gtid` where the source logs GTIDs.
    Begin {
        gtid: Option<MariaGtid>,
        /// Just after the event that opens the transaction: the transaction
        /// is in a snapshot taken at coordinate c exactly when `at` <= c.
        at: BinlogCoord,
        timestamp: u32,
    },
    /// The statement whose row events follow (MariaDB annotate events).
    Annotate(String),
    Rows(RowChange),
    /// A statement logged as text: DDL, or anything else.
    Query {
        schema: String,
        sql: String,
        statement: Statement,
        /// The source session it ran in (`sql_mode`, character sets).
        session: status::Session,
    },
    /// The transaction (just begun) is an XA transaction's prepared part:
    /// its rows take effect only at its `XaEnd` with `commit`.
    XaPrepare {
        xid: String,
    },
    /// A prepared XA transaction commits or rolls back (this transaction
    /// holds nothing else).
    XaEnd {
        xid: String,
        commit: bool,
    },
    /// The transaction ends; `end` is the coordinate just after it.
    Commit {
        end: BinlogCoord,
        timestamp: u32,
    },
    /// The source has nothing new (heartbeat) and has written up to `at`.
    Idle {
        at: BinlogCoord,
    },
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Definite(String),
    /// The source cannot send from the position asked (1236): often
    /// because it purged that binlog, which the caller checks.
    #[error("{0}")]
    Unavailable(String),
}

/// Heartbeat period asked of the source, and the silence taken as a dead link.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// Which tables' rows the job wants: (database, table) → in scope.
pub type Scope = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

pub struct Reader {
    stream: BinlogStream,
    /// The replica connection's thread on the source.
    thread: u32,
    file: String,
    scope: Scope,
    /// Table maps by table id: `None` for tables out of scope.
    tables: HashMap<u64, Option<Arc<TableMap>>>,
    /// The current group is standalone: it ends after its statement.
    standalone: bool,
    in_group: bool,
    /// The current group's statement is not applied: the start (or the
    /// rollback) of a two-phase ALTER, which is applied at its commit.
    skip_statement: bool,
    /// The current group is part of an XA transaction.
    xa: Option<mariadb::Xa>,
    /// The source checksums events, and whether a format description event
    /// (which tells the decoder so) has arrived yet.
    checksummed: bool,
    seen_format: bool,
    /// Bytes of binlog events received.
    pub bytes_read: u64,
}

fn sql_error(context: &str, e: mysql_async::Error) -> ReadError {
    let message = format!("{context}: {e}");
    match crate::error::kind_of(&e) {
        Kind::Transient => ReadError::Transient(message),
        _ => ReadError::Definite(message),
    }
}

impl ReadError {
    /// An unavailable position is purged or definite: the caller checks
    /// which (`retention`); read as is, definite.
    pub fn kind(&self) -> Kind {
        match self {
            ReadError::Transient(_) => Kind::Transient,
            ReadError::Definite(_) | ReadError::Unavailable(_) => Kind::Definite,
        }
    }
}

/// A server id for the job's replica connection: stable per job, in a range
/// servers are unlikely to use, and never 0.
pub fn server_id(job: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in job.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    0x4000_0000 | (h & 0x3fff_ffff)
}

impl Reader {
    pub async fn open(
        addr: &ServerAddr<'_>,
        start: &Position,
        server_id: u32,
        scope: Scope,
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        let mut conn = db::connect(addr, None, timeout)
            .await
            .map_err(|e| match e {
                ConnectError::Unreachable { .. } => ReadError::Transient(format!("source {e}")),
                ConnectError::Refused { .. } => ReadError::Definite(format!("source {e}")),
            })?;
        let setup = format!(
            "SET @master_binlog_checksum = @@global.binlog_checksum, \
             @mariadb_slave_capability = 4, @master_heartbeat_period = {}",
            HEARTBEAT.as_nanos()
        );
        conn.query_drop(setup)
            .await
            .map_err(|e| sql_error("setting up the binlog connection", e))?;
        let checksum: Option<String> = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(|e| sql_error("reading the source's binlog_checksum", e))?;
        let mut request = BinlogStreamRequest::new(server_id);
        if start.gtid.is_empty() {
            request = request
                .with_filename(start.coord.file.as_bytes())
                .with_pos(start.coord.pos);
        } else {
            conn.query_drop(format!(
                "SET @slave_connect_state = '{}', @slave_gtid_strict_mode = 0, \
                 @slave_gtid_ignore_duplicates = 0",
                start.gtid
            ))
            .await
            .map_err(|e| sql_error("setting the GTID start position", e))?;
        }
        let thread = conn.id();
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| sql_error("requesting the binlog", e))?;
        Ok(Reader {
            stream,
            thread,
            file: start.coord.file.clone(),
            scope,
            tables: HashMap::new(),
            standalone: false,
            in_group: false,
            skip_statement: false,
            xa: None,
            checksummed: checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE")),
            seen_format: false,
            bytes_read: 0,
        })
    }

    /// The next events (often one, none for events that carry nothing).
    pub async fn next(&mut self) -> Result<Vec<SourceEvent>, ReadError> {
        let event = self.receive().await?;
        let header = event.header();
        self.bytes_read += u64::from(header.event_size());
        if let Some(events) = self.mariadb_event(&event)? {
            return Ok(events);
        }
        let pos = u64::from(header.log_pos());
        let kind = header.event_type_raw();
        let data = event.read_data().map_err(|e| {
            ReadError::Definite(format!(
                "cannot decode binlog event type {kind} at {}: {e}",
                self.at(pos)
            ))
        })?;
        let Some(data) = data else {
            return Err(ReadError::Definite(format!(
                "the binlog holds an {} at {}, which this version cannot interpret",
                mariadb::event_name(kind),
                self.at(pos)
            )));
        };
        self.decoded(data, pos, header.timestamp())
    }

    /// Where the reader is: `pos` in the binlog file it reads.
    fn at(&self, pos: u64) -> BinlogCoord {
        BinlogCoord {
            file: self.file.clone(),
            pos,
        }
    }

    /// The next event of the stream, or why there is none.
    async fn receive(&mut self) -> Result<mysql_async::binlog::events::Event, ReadError> {
        match tokio::time::timeout(SILENCE_LIMIT, self.stream.next()).await {
            Err(_) => Err(ReadError::Transient(format!(
                "no binlog event or heartbeat from the source for {} s",
                SILENCE_LIMIT.as_secs()
            ))),
            Ok(None) => Err(ReadError::Transient(
                "the source closed the binlog stream".into(),
            )),
            // 1236: the server cannot send from there (purged binlog, …).
            Ok(Some(Err(e))) => Err(match db::server_code(&e) {
                Some(1236) => ReadError::Unavailable(format!(
                    "the source cannot send the binlog from the job's position: {e}"
                )),
                // 4052: the job's previous binlog connection (before a
                // restart) is still registered; it goes away by itself.
                Some(4052) => ReadError::Transient(format!("reading the binlog: {e}")),
                _ => sql_error("reading the binlog", e),
            }),
            Ok(Some(Ok(event))) => Ok(event),
        }
    }

    /// The events MariaDB adds to the binlog format, read from their raw
    /// bytes; `None` for an event the decoder reads.
    fn mariadb_event(
        &mut self,
        event: &mysql_async::binlog::events::Event,
    ) -> Result<Option<Vec<SourceEvent>>, ReadError> {
        let header = event.header();
        let pos = u64::from(header.log_pos());
        let kind = header.event_type_raw();
        let malformed = |e: mariadb::Malformed| ReadError::Definite(e.to_string());
        Ok(Some(match kind {
            mariadb::GTID => {
                let g = mariadb::gtid(event.data(), header.server_id()).map_err(malformed)?;
                self.begin_mariadb(g, self.at(pos), header.timestamp())
            }
            mariadb::GTID_LIST => {
                mariadb::gtid_list(event.data()).map_err(malformed)?;
                vec![]
            }
            mariadb::BINLOG_CHECKPOINT => {
                mariadb::binlog_checkpoint(event.data()).map_err(malformed)?;
                vec![]
            }
            mariadb::ANNOTATE_ROWS => {
                vec![SourceEvent::Annotate(mariadb::annotate_rows(event.data()))]
            }
            // XA_PREPARE_LOG_EVENT: the end of an XA transaction's
            // prepared part.
            mariadb::XA_PREPARE if self.in_group => {
                self.end_group(self.at(pos), header.timestamp())
            }
            mariadb::XA_PREPARE => vec![],
            compressed::QUERY_COMPRESSED => {
                let q = compressed::query(event.data())
                    .map_err(|e| ReadError::Definite(format!("{e} (at {})", self.at(pos))))?;
                self.query(
                    q.schema,
                    q.sql,
                    status::read(&q.status_vars).at(header.timestamp()),
                    self.at(pos),
                    header.timestamp(),
                )
            }
            k if compressed::is_rows(k) => {
                let r = compressed::rows(k, event.data())
                    .map_err(|e| ReadError::Definite(format!("{e} (at {})", self.at(pos))))?;
                self.rows(
                    r.op,
                    r.table_id,
                    r.before.as_deref(),
                    r.after.as_deref(),
                    &r.data,
                    self.at(pos),
                )?
            }
            164..=191 => {
                return Err(ReadError::Definite(format!(
                    "the binlog holds a {} at {}, which this version cannot apply; \
                     turn the feature off on the source and resync",
                    mariadb::event_name(kind),
                    self.at(pos)
                )))
            }
            _ => return Ok(None),
        }))
    }

    /// A MariaDB GTID event: a transaction starts (an XA one may be
    /// prepared here).
    fn begin_mariadb(
        &mut self,
        g: mariadb::GtidEvent,
        at: BinlogCoord,
        timestamp: u32,
    ) -> Vec<SourceEvent> {
        self.standalone = g.standalone;
        self.in_group = true;
        // A two-phase ALTER is logged at its start and at its end; the rows
        // between are of the table before it, so it is applied once, at its
        // commit, and not at all if rolled back.
        self.skip_statement = matches!(
            g.alter,
            Some(mariadb::AlterPhase::Start | mariadb::AlterPhase::Rollback)
        );
        let mut out = vec![SourceEvent::Begin {
            gtid: Some(g.gtid),
            at,
            timestamp,
        }];
        if let Some(xa) = g.xa.as_ref().filter(|x| x.prepared) {
            out.push(SourceEvent::XaPrepare {
                xid: xa.xid.clone(),
            });
        }
        self.xa = g.xa;
        out
    }

    /// An event the decoder read.
    fn decoded(
        &mut self,
        data: EventData<'_>,
        pos: u64,
        timestamp: u32,
    ) -> Result<Vec<SourceEvent>, ReadError> {
        Ok(match data {
            EventData::RotateEvent(r) => {
                // The rotate event that opens the stream comes before any
                // format description, so its checksum is still on its end.
                let name = r.name_raw();
                let name = match name.len().checked_sub(4) {
                    Some(n) if self.checksummed && !self.seen_format => &name[..n],
                    _ => name,
                };
                self.file = String::from_utf8_lossy(name).into_owned();
                vec![]
            }
            EventData::FormatDescriptionEvent(_) => {
                self.seen_format = true;
                vec![]
            }
            EventData::PreviousGtidsEvent(_)
            | EventData::TransactionPayloadEvent(_)
            | EventData::IgnorableEvent(_)
            | EventData::StopEvent
            | EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_) => vec![],
            EventData::HeartbeatEvent => vec![SourceEvent::Idle { at: self.at(pos) }],
            EventData::GtidEvent(_) | EventData::AnonymousGtidEvent(_) => {
                // MySQL flags nothing: a group whose first statement is not
                // BEGIN is a DDL standing alone.
                self.in_group = true;
                self.standalone = true;
                vec![SourceEvent::Begin {
                    gtid: None,
                    at: self.at(pos),
                    timestamp,
                }]
            }
            EventData::RowsQueryEvent(q) => {
                vec![SourceEvent::Annotate(q.query().into_owned())]
            }
            EventData::XidEvent(_) => self.end_group(self.at(pos), timestamp),
            EventData::QueryEvent(q) => self.query(
                q.schema().into_owned(),
                q.query_raw().to_vec(),
                status::read(q.status_vars_raw()).at(timestamp),
                self.at(pos),
                timestamp,
            ),
            EventData::TableMapEvent(tme) => {
                let wanted = (self.scope)(&tme.database_name(), &tme.table_name());
                let map = if wanted {
                    Some(Arc::new(
                        decode::table_map(&tme).map_err(ReadError::Definite)?,
                    ))
                } else {
                    None
                };
                self.tables.insert(tme.table_id(), map);
                vec![]
            }
            EventData::RowsEvent(rows) => self.rows_event(&rows, pos)?,
            EventData::IncidentEvent(i) => {
                return Err(ReadError::Definite(format!(
                "the source logged an incident at {} ({}): events may be missing; resync the job",
                self.at(pos),
                i.message()
            )))
            }
            other => {
                return Err(ReadError::Definite(format!(
                    "the binlog holds an event this version cannot apply at {}: {:?}",
                    self.at(pos),
                    std::mem::discriminant(&other)
                )))
            }
        })
    }

    /// A rows event the decoder read.
    fn rows_event(
        &mut self,
        rows: &RowsEventData<'_>,
        pos: u64,
    ) -> Result<Vec<SourceEvent>, ReadError> {
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => RowOp::Insert,
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                RowOp::Update
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                RowOp::Delete
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(ReadError::Definite(format!(
                    "the binlog holds a partial JSON update at {}; set \
                     binlog_row_value_options='' on the source and resync",
                    self.at(pos)
                )))
            }
        };
        let n = rows.num_columns() as usize;
        let before = rows
            .columns_before_image()
            .map(|b| b.iter().by_vals().take(n).collect::<Vec<bool>>());
        let after = rows
            .columns_after_image()
            .map(|b| b.iter().by_vals().take(n).collect::<Vec<bool>>());
        self.rows(
            op,
            rows.table_id(),
            before.as_deref(),
            after.as_deref(),
            rows.rows_data(),
            self.at(pos),
        )
    }

    /// A statement logged as text: BEGIN, COMMIT or ROLLBACK of a group,
    /// or a statement (its own group when outside one).
    fn query(
        &mut self,
        schema: String,
        raw: Vec<u8>,
        session: status::Session,
        at: BinlogCoord,
        timestamp: u32,
    ) -> Vec<SourceEvent> {
        // Text in a character set this cannot read is held where it
        // touches the job (never run mangled).
        let (sql, statement) = match status::statement_text(&raw, &session) {
            Some(sql) => {
                let statement = ddl::parse_in(&sql, session.dialect());
                (sql, statement)
            }
            None => (
                String::from_utf8_lossy(&raw).into_owned(),
                Statement::Other(format!(
                    "TEXT IN CHARACTER SET {}",
                    session.charset.map_or(0, |c| c.0)
                )),
            ),
        };
        // XA END, XA COMMIT, XA ROLLBACK: the XA group's frame; the end of
        // a prepared transaction says whether it committed.
        let xa_frame = self.xa.is_some()
            && sql
                .trim_start()
                .get(..3)
                .is_some_and(|w| w.eq_ignore_ascii_case("XA "));
        if xa_frame {
            let mut out = Vec::new();
            if let Some(xa) = self.xa.as_ref().filter(|x| !x.prepared) {
                let word = sql.split_whitespace().nth(1).unwrap_or_default();
                out.push(SourceEvent::XaEnd {
                    xid: xa.xid.clone(),
                    commit: word.eq_ignore_ascii_case("COMMIT"),
                });
            }
            if self.standalone {
                out.extend(self.end_group(at, timestamp));
            }
            return out;
        }
        if self.skip_statement {
            return if self.standalone {
                self.end_group(at, timestamp)
            } else {
                vec![]
            };
        }
        match statement {
            Statement::Begin if self.in_group => {
                self.standalone = false;
                vec![]
            }
            Statement::Begin => {
                self.in_group = true;
                vec![SourceEvent::Begin {
                    gtid: None,
                    at,
                    timestamp,
                }]
            }
            Statement::Commit | Statement::Rollback => self.end_group(at, timestamp),
            _ => {
                // A statement outside any group (no GTIDs) is a group of
                // its own.
                let mut out = Vec::new();
                if !self.in_group {
                    out.push(SourceEvent::Begin {
                        gtid: None,
                        at: at.clone(),
                        timestamp,
                    });
                }
                out.push(SourceEvent::Query {
                    schema,
                    sql,
                    statement,
                    session,
                });
                if self.standalone || !self.in_group {
                    out.extend(self.end_group(at, timestamp));
                }
                out
            }
        }
    }

    /// A row event's images, decoded against its table map (nothing for a
    /// table out of scope).
    fn rows(
        &mut self,
        op: RowOp,
        table_id: u64,
        before: Option<&[bool]>,
        after: Option<&[bool]>,
        data: &[u8],
        at: BinlogCoord,
    ) -> Result<Vec<SourceEvent>, ReadError> {
        let Some(entry) = self.tables.get(&table_id) else {
            return Err(ReadError::Definite(format!(
                "row event at {at} names table id {table_id} with no table map before it"
            )));
        };
        let Some(map) = entry else { return Ok(vec![]) };
        let change = decode::rows(map, op, before, after, data)
            .map_err(|e| ReadError::Definite(format!("{e} (at {at})")))?;
        Ok(vec![SourceEvent::Rows(change)])
    }

    fn end_group(&mut self, end: BinlogCoord, timestamp: u32) -> Vec<SourceEvent> {
        self.in_group = false;
        self.standalone = false;
        self.skip_statement = false;
        self.xa = None;
        vec![SourceEvent::Commit { end, timestamp }]
    }

    /// The row events of the one transaction whose first event follows
    /// `at` (a prepared XA transaction's, read again when it commits), on
    /// a connection of its own (`server_id`, not the stream's).
    pub async fn rows_at(
        addr: &ServerAddr<'_>,
        at: &BinlogCoord,
        server_id: u32,
        scope: Scope,
        timeout: Duration,
    ) -> Result<Vec<RowChange>, ReadError> {
        let start = Position {
            gtid: Default::default(),
            coord: at.clone(),
        };
        let mut reader = Reader::open(addr, &start, server_id, scope, timeout).await?;
        let mut rows = Vec::new();
        let read = async {
            loop {
                for e in reader.next().await? {
                    match e {
                        SourceEvent::Rows(change) => rows.push(change),
                        SourceEvent::Annotate(_) | SourceEvent::Idle { .. } => {}
                        _ => return Ok::<_, ReadError>(()),
                    }
                }
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(60), read).await;
        reader.close(addr, timeout).await;
        match result {
            Ok(Ok(())) => Ok(rows),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ReadError::Transient(format!(
                "reading a prepared XA transaction again at {at} took over 60 s"
            ))),
        }
    }

    /// The row events of the prepared part of XA transaction `xid`, found
    /// by reading the binlog from its oldest file up to `until` (where its
    /// commit is): `None` when it is not there (purged, or never prepared
    /// on this node). For a commit whose prepare came before the job's
    /// position: its rows were in no snapshot.
    pub async fn find_prepared(
        addr: &ServerAddr<'_>,
        xid: &str,
        until: &BinlogCoord,
        server_id: u32,
        scope: Scope,
        timeout: Duration,
    ) -> Result<Option<Vec<RowChange>>, ReadError> {
        let mut conn = db::connect(addr, None, timeout)
            .await
            .map_err(|e| ReadError::Transient(format!("source {e}")))?;
        let oldest = retention::read(&mut conn)
            .await
            .map_err(|e| sql_error("reading the source's binlog files", e))?
            .oldest()
            .to_string();
        let _ = conn.disconnect().await;
        let start = Position {
            gtid: Default::default(),
            coord: BinlogCoord {
                file: oldest,
                pos: 4,
            },
        };
        let mut reader = Reader::open(addr, &start, server_id, scope, timeout).await?;
        let limit = until.commit_seq().unwrap_or(u64::MAX);
        let read = async {
            let mut rows: Option<Vec<RowChange>> = None;
            loop {
                for e in reader.next().await? {
                    match e {
                        SourceEvent::XaPrepare { xid: x } if x == xid => rows = Some(Vec::new()),
                        SourceEvent::Rows(change) => {
                            if let Some(r) = rows.as_mut() {
                                r.push(change);
                            }
                        }
                        SourceEvent::Commit { end, .. } => {
                            if rows.is_some() {
                                return Ok::<_, ReadError>(rows);
                            }
                            if end.commit_seq().is_some_and(|s| s >= limit) {
                                return Ok(None);
                            }
                        }
                        SourceEvent::Idle { .. } => return Ok(None),
                        _ => {}
                    }
                }
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(300), read).await;
        reader.close(addr, timeout).await;
        match result {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Closes the replica connection and ends its thread on the source
    /// (`KILL`, allowed on one's own threads): a source notices a closed
    /// replica connection only at its next write, and until then refuses
    /// another with the same server id (error 4052).
    pub async fn close(self, addr: &ServerAddr<'_>, timeout: Duration) {
        let thread = self.thread;
        let _ = tokio::time::timeout(timeout, self.stream.close()).await;
        if let Ok(mut conn) = db::connect(addr, None, timeout).await {
            // 1094: the thread is gone already.
            let _ = conn.query_drop(format!("KILL CONNECTION {thread}")).await;
            let _ = conn.disconnect().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_and_nonzero() {
        assert_eq!(server_id("job1"), server_id("job1"));
        assert_ne!(server_id("job1"), server_id("job2"));
        assert!(server_id("") >= 0x4000_0000);
    }
}
