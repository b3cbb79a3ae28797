//! Repairs: a table's differing key ranges copied again from the source
//! while the stream holds, page by page from a resumable cursor, then
//! compared again.

use super::*;

impl Verify {
    /// Copies table `i`'s differing ranges again, then compares them again.
    pub(super) async fn repair(&self, i: usize) -> Result<(), SyncError> {
        let check = self.progress.borrow().tables[i].clone();
        let repair = check.repair.clone().unwrap_or_default();
        let table = check.table.clone();
        let dest_table = self.dest_table(&table);
        let src_from = self.from(&self.spec.src.database, &table);
        let dest_from = self.from(&self.spec.dest.database, &dest_table);
        let mut next = repair.ranges_repaired as usize;
        let mut after: Option<KeyValue> = repair.cursor.as_deref().and_then(key_bytes);
        while next < repair.ranges.len() {
            let mut dest = full_sync::connect_dest(&self.spec, self.connect_timeout).await?;
            let (mut src, _, held) = self.hold_at_source().await?;
            let info = self.table_info(&mut src, &table).await?;
            if info.versioned {
                // Rows deleted and written again would be history.
                return Err(SyncError::Definite(format!(
                    "{table} is system-versioned: a repair would write its rows as new \
                     history; copy it again with partial_sync"
                )));
            }
            let started = Instant::now();
            while next < repair.ranges.len() && started.elapsed() < HOLD_BUDGET {
                let range = &repair.ranges[next];
                let region = Region::of(range).ok_or_else(|| {
                    SyncError::Definite(format!("a stored key range of {table} is not valid"))
                })?;
                let (deleted, written, more) = self
                    .copy_page(
                        &mut src,
                        &mut dest,
                        &info,
                        &src_from,
                        &dest_table,
                        &region,
                        after.as_ref(),
                    )
                    .await?;
                after = more;
                if after.is_none() {
                    next += 1;
                }
                let done = next as u64;
                let cursor = after.as_ref().map(key_parts);
                self.progress.send_modify(|v| {
                    if let Some(r) = v.tables[i].repair.as_mut() {
                        r.ranges_repaired = done;
                        r.rows_deleted += deleted;
                        r.rows_written += written;
                        r.cursor = cursor;
                    }
                });
            }
            drop(held);
            let _ = tokio::join!(src.disconnect(), dest.disconnect());
        }
        info!(job = %self.spec.name, table = %table, ranges = repair.ranges.len(),
              "repair: ranges copied again; comparing them again");
        // Compare the repaired ranges again.
        let mut pair = self.open_pair().await?;
        let info = self.table_info(&mut pair.src, &table).await?;
        let mut found = Found::default();
        let mut pair = Some(pair);
        for range in &repair.ranges {
            let mut p = self.fresh(pair.take()).await?;
            let region = Region::of(range).unwrap_or_default();
            found.absorb(
                self.diff(&mut p, &info, &src_from, &dest_from, &region)
                    .await?,
            );
            pair = Some(p);
        }
        let position = pair.map(|p| p.position);
        let now = crate::sync::now_ms();
        self.finish_table(i, |t| {
            t.rows_different = found.rows_different;
            t.ranges = found.ranges;
            t.ranges_truncated = found.truncated || check.ranges_truncated;
            t.equal = Some(t.rows_different == 0 && !t.ranges_truncated);
            t.position = position;
            if let Some(r) = t.repair.as_mut() {
                r.state = CheckState::Done;
                r.finished_at = Some(now);
                r.ranges.clear();
            }
        });
        Ok(())
    }

    /// Copies one page of `region` (rows after `after`) again in one
    /// destination transaction: deleted, written, and where the next page
    /// starts (`None`: the region is done).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn copy_page(
        &self,
        src: &mut Conn,
        dest: &mut Conn,
        info: &TableInfo,
        src_from: &str,
        dest_table: &str,
        region: &Region,
        after: Option<&KeyValue>,
    ) -> Result<(u64, u64, Option<KeyValue>), SyncError> {
        let key = &info.key;
        let page = self.settings.chunk_rows;
        let select: Vec<String> = info.columns.iter().map(|c| c.select_expr()).collect();
        let mut sql = with_filter(
            format!(
                "SELECT {}, {} FROM {src_from}",
                select.join(", "),
                chunks::key_select(key)
            )
            .into_bytes(),
            region.filter(key, after),
        );
        sql.extend_from_slice(
            format!(" ORDER BY {} LIMIT {page}", chunks::key_order(key)).as_bytes(),
        );
        let rows: Vec<mysql_async::Row> = src
            .query(sql)
            .await
            .map_err(|e| SyncError::sql("reading source rows to repair", e))?;
        let n = info.columns.len();
        let mut last: Option<KeyValue> = None;
        let db = &self.spec.dest.database;
        let columns: Vec<(String, _)> = info
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.kind()))
            .collect();
        let mut insert = InsertBuilder::new(db, dest_table, &columns, self.statement_bytes);
        let mut statements: Vec<Vec<u8>> = Vec::new();
        let written = rows.len() as u64;
        let full = written == page;
        for row in rows {
            let mut values: Vec<Option<Vec<u8>>> =
                row.unwrap_raw().into_iter().map(bytes_of).collect();
            let k: KeyValue = values.split_off(n).into_iter().flatten().collect();
            last = Some(k);
            if let Some(s) = insert.push(&values) {
                statements.push(s);
            }
        }
        statements.extend(insert.take());
        let upper = if full { last.clone() } else { None };
        let page_region = Region {
            lower: None,
            upper: upper.clone(),
        };
        let mut filter = region.filter(key, after).unwrap_or_else(|| b"1".to_vec());
        if let Some(f) = page_region.filter(key, None) {
            filter.extend_from_slice(b" AND ");
            filter.extend_from_slice(&f);
        }
        let mut delete = format!(
            "DELETE FROM {}.{} WHERE ",
            quote_ident(db),
            quote_ident(dest_table)
        )
        .into_bytes();
        delete.extend_from_slice(&filter);
        let context = || format!("repairing destination table {db}.{dest_table}");
        dest.query_drop("START TRANSACTION")
            .await
            .map_err(|e| SyncError::sql(context(), e))?;
        dest.query_drop(delete)
            .await
            .map_err(|e| SyncError::sql(context(), e))?;
        let deleted = dest.affected_rows();
        for s in statements {
            dest.query_drop(s)
                .await
                .map_err(|e| SyncError::sql(context(), e))?;
        }
        dest.query_drop(checkpoint::fence_sql(db, &self.spec.name, self.epoch))
            .await
            .map_err(|e| SyncError::sql(context(), e))?;
        dest.query_drop("COMMIT")
            .await
            .map_err(|e| SyncError::sql(context(), e))?;
        Ok((deleted, written, upper))
    }
}
