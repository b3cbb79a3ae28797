//! The copying connections of a full sync: each takes chunks off the
//! shared queue and copies one at a time, rows and chunk checkpoint in one
//! destination transaction.

use super::*;

/// One copying connection: takes chunks off the queue until it is empty.
pub(super) async fn copy_chunks(shared: Arc<Shared>, mut src: Conn) -> Result<(), SyncError> {
    let spec = &shared.spec;
    let mut dest = connect_dest(spec, shared.connect_timeout).await?;
    loop {
        let Some(chunk) = shared.queue.lock().pop_front() else {
            break;
        };
        let done = copy_chunk(&shared, &mut src, &mut dest, &chunk).await?;
        shared
            .metrics
            .count_chunk(&spec.name, done.rows, done.bytes);
        let (table_done, estimated_left) = {
            let mut tally = shared.tally.lock();
            tally.estimated_left = tally
                .estimated_left
                .saturating_sub(chunk.bounds.estimated_rows);
            let table_done = match tally.left.get_mut(&chunk.src_table) {
                Some(n) => {
                    *n -= 1;
                    *n == 0
                }
                None => false,
            };
            if table_done {
                tally.left.remove(&chunk.src_table);
            }
            (table_done, tally.estimated_left)
        };
        if table_done {
            let info = &shared.tables[&chunk.src_table];
            tables::add_deferred_keys(
                &mut dest,
                &spec.dest.database,
                &chunk.dest_table,
                &info.create_sql,
            )
            .await
            .map_err(table_error)?;
        }
        shared.progress.send_modify(|p| {
            p.rows_copied += done.rows;
            p.bytes_copied += done.bytes;
            p.rows_estimated = p.rows_copied + estimated_left;
            if table_done {
                p.tables_done += 1;
            }
        });
    }
    let _ = tokio::join!(src.disconnect(), dest.disconnect());
    Ok(())
}

/// Copies one chunk in one destination transaction, reading and writing at
/// once: the reader builds statements while the writer sends the previous one.
pub(super) async fn copy_chunk(
    shared: &Shared,
    src: &mut Conn,
    dest: &mut Conn,
    chunk: &PlannedChunk,
) -> Result<ChunkDone, SyncError> {
    let spec = &shared.spec;
    let (src_db, dest_db) = (&spec.src.database, &spec.dest.database);
    let info = shared.tables.get(&chunk.src_table).ok_or_else(|| {
        SyncError::Definite(format!("no definition for table {}", chunk.src_table))
    })?;
    let sql = chunk_select(info, src_db, chunk);
    let mut sink = sink_for(shared, info, chunk);
    let load_statement = sink.load_statement();
    let source_context = || {
        format!(
            "reading source table {src_db}.{} (chunk {})",
            info.name, chunk.chunk
        )
    };
    let dest_context = || {
        format!(
            "writing destination table {dest_db}.{} (chunk {} of source table {src_db}.{})",
            chunk.dest_table, chunk.chunk, info.name
        )
    };
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
    let ((rows, bytes), ()) = tokio::try_join!(
        read_rows(src, sql, &mut sink, tx, &source_context),
        write_rows(dest, info.versioned, load_statement, rx, &dest_context),
    )?;
    let done = ChunkDone {
        at: shared.point.clone(),
        rows,
        bytes,
    };
    dest.query_drop(plan::mark_done_sql(dest_db, &spec.name, chunk, &done))
        .await
        .map_err(|e| SyncError::sql(dest_context(), e))?;
    dest.query_drop(checkpoint::fence_sql(dest_db, &spec.name, shared.epoch))
        .await
        .map_err(|e| SyncError::sql(dest_context(), e))?;
    dest.query_drop("COMMIT")
        .await
        .map_err(|e| SyncError::sql(dest_context(), e))?;
    Ok(done)
}

/// The SELECT of one chunk: its columns (a versioned table's history too,
/// with its system times), its key range.
fn chunk_select(info: &TableInfo, src_db: &str, chunk: &PlannedChunk) -> Vec<u8> {
    let mut select: Vec<String> = info.columns.iter().map(|c| c.select_expr()).collect();
    let history = match &info.period {
        Some((start, end)) => {
            select.extend([quote_ident(start), quote_ident(end)]);
            " FOR SYSTEM_TIME ALL"
        }
        None => "",
    };
    let mut sql = format!(
        "SELECT {} FROM {}.{}{history}",
        select.join(", "),
        quote_ident(src_db),
        quote_ident(&info.name)
    )
    .into_bytes();
    if let Some(filter) = chunks::chunk_filter(&info.key, &chunk.bounds) {
        sql.extend_from_slice(b" WHERE ");
        sql.extend_from_slice(&filter);
    }
    sql
}

/// How a chunk's rows are written: LOAD DATA blocks where the destination
/// allows it (not for a versioned table), else multi-row INSERTs.
fn sink_for(shared: &Shared, info: &TableInfo, chunk: &PlannedChunk) -> Sink {
    let dest_db = &shared.spec.dest.database;
    if shared.load_data && !info.versioned {
        let columns: Vec<(String, bool)> = info
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.data_type == "bit"))
            .collect();
        return Sink::Load {
            statement: load::statement(dest_db, &chunk.dest_table, &columns),
            buf: Vec::new(),
            block: LOAD_BLOCK_BYTES,
        };
    }
    let mut columns: Vec<(String, _)> = info
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind()))
        .collect();
    if let Some((start, end)) = &info.period {
        for c in [start, end] {
            columns.push((c.clone(), LiteralKind::Quoted));
        }
    }
    Sink::Insert(InsertBuilder::new(
        dest_db,
        &chunk.dest_table,
        &columns,
        shared.statement_bytes,
    ))
}

/// Streams a chunk's rows from the source into `sink`, its payloads to
/// `tx`; the rows and bytes read.
async fn read_rows(
    src: &mut Conn,
    sql: Vec<u8>,
    sink: &mut Sink,
    tx: mpsc::Sender<Vec<u8>>,
    context: &(dyn Fn() -> String + Sync),
) -> Result<(u64, u64), SyncError> {
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut result = src
        .query_iter(sql)
        .await
        .map_err(|e| SyncError::sql(context(), e))?;
    if let Some(mut stream) = result
        .stream::<mysql_async::Row>()
        .await
        .map_err(|e| SyncError::sql(context(), e))?
    {
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| SyncError::sql(context(), e))?
        {
            let values: Vec<Option<Vec<u8>>> = row
                .unwrap_raw()
                .into_iter()
                .map(|v| match v {
                    Some(mysql_async::Value::Bytes(b)) => Some(b),
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(other) => Some(other.as_sql(true).into_bytes()),
                })
                .collect();
            rows += 1;
            bytes += values.iter().flatten().map(|v| v.len() as u64).sum::<u64>();
            if let Some(payload) = sink.push(&values) {
                if tx.send(payload).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(result);
    if let Some(payload) = sink.finish() {
        let _ = tx.send(payload).await;
    }
    Ok((rows, bytes))
}

/// Writes the payloads from `rx` in a destination transaction it opens
/// (left open for the chunk's checkpoint).
async fn write_rows(
    dest: &mut Conn,
    versioned: bool,
    load_statement: Option<String>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    context: &(dyn Fn() -> String + Sync),
) -> Result<(), SyncError> {
    if versioned {
        // Rows written with their own ROW_START and ROW_END (MariaDB 10.11+).
        dest.query_drop("SET SESSION system_versioning_insert_history = 1")
            .await
            .map_err(|e| {
                SyncError::sql(
                    format!(
                        "{}: a system-versioned table's history needs \
                         system_versioning_insert_history (MariaDB 10.11+ destination)",
                        context()
                    ),
                    e,
                )
            })?;
    }
    dest.query_drop("START TRANSACTION")
        .await
        .map_err(|e| SyncError::sql(context(), e))?;
    match load_statement {
        Some(statement) => {
            // The server asks for the "file" and the handler streams the
            // blocks the reader produces, as they come.
            dest.set_infile_handler(async move {
                let blocks = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|block| (Ok(bytes::Bytes::from(block)), rx))
                });
                Ok(blocks.boxed())
            });
            dest.query_drop(statement)
                .await
                .map_err(|e| SyncError::sql(context(), e))?;
        }
        None => {
            while let Some(statement) = rx.recv().await {
                dest.query_drop(statement)
                    .await
                    .map_err(|e| SyncError::sql(context(), e))?;
            }
        }
    }
    Ok(())
}

/// Bytes of LOAD DATA stream handed to the destination connection at a time.
pub(super) const LOAD_BLOCK_BYTES: usize = 256 << 10;

/// Where a chunk's rows go: INSERT statements, or one LOAD DATA stream.
pub(super) enum Sink {
    Insert(InsertBuilder),
    Load {
        statement: String,
        buf: Vec<u8>,
        block: usize,
    },
}

impl Sink {
    /// A full statement or stream block, when this row completed one.
    fn push(&mut self, row: &[Option<Vec<u8>>]) -> Option<Vec<u8>> {
        match self {
            Sink::Insert(builder) => builder.push(row),
            Sink::Load { buf, block, .. } => {
                load::push_row(buf, row);
                (buf.len() >= *block).then(|| std::mem::take(buf))
            }
        }
    }

    fn finish(&mut self) -> Option<Vec<u8>> {
        match self {
            Sink::Insert(builder) => builder.take(),
            Sink::Load { buf, .. } => (!buf.is_empty()).then(|| std::mem::take(buf)),
        }
    }

    fn load_statement(&self) -> Option<String> {
        match self {
            Sink::Insert(_) => None,
            Sink::Load { statement, .. } => Some(statement.clone()),
        }
    }
}
