//! Creating the destination's database, tables and views from the source's
//! definitions, under the destination's names.
//!
//! A table is created from the source's `SHOW CREATE TABLE` with only its
//! name changed. An existing table is reused when its definition is the
//! source's (compared as `SHOW CREATE TABLE` text, ignoring the name and the
//! AUTO_INCREMENT counter) and emptied first; what happens to one that
//! differs is the caller's [`Existing`] policy. Views lose their DEFINER (the
//! destination's account need not exist) and have the source database's name
//! in their body replaced by the destination's.

use crate::db::quote_ident;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// What to do with a table that is already on the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Not the job's to touch: an error.
    Refuse,
    /// Reuse (emptied) if its definition is the source's, else an error.
    ReuseIfSame,
    /// The job's own table from an earlier run: reuse if the same, else
    /// drop and create it anew.
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("destination table {table} already exists; drop it or set allow_table_exists")]
    Exists { table: String },
    #[error("destination table {table} exists with a different definition than source table {source_table}: the destination has `{dest_sql}`, the source `{source_sql}`; drop or fix the destination table")]
    Different {
        table: String,
        source_table: String,
        dest_sql: String,
        source_sql: String,
    },
    #[error("source definition of {name} is not in the form SHOW CREATE gives: {sql}")]
    Unexpected { name: String, sql: String },
    #[error("destination table {table}: {source}")]
    Sql {
        table: String,
        source: mysql_async::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    Created,
    Emptied,
    Recreated,
}

pub async fn ensure_database(
    conn: &mut Conn,
    database: &str,
    options: Option<&(String, String)>,
) -> Result<(), mysql_async::Error> {
    let mut sql = format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(database));
    if let Some((charset, collation)) = options {
        sql.push_str(&format!(" CHARACTER SET {charset} COLLATE {collation}"));
    }
    conn.query_drop(sql).await
}

/// Makes `database.table` an empty table with the source's definition.
pub async fn prepare_table(
    conn: &mut Conn,
    database: &str,
    table: &str,
    source_table: &str,
    source_sql: &str,
    existing: Existing,
) -> Result<Prepared, TableError> {
    let name = format!("{database}.{table}");
    let sql_err = |source| TableError::Sql {
        table: name.clone(),
        source,
    };
    // Created without its plain secondary keys, which `add_deferred_keys`
    // builds once the rows are in (a sorted build beats row-by-row inserts).
    let (lean, _) = defer_secondary_keys(source_sql);
    let create = rewrite_create_table(&lean, source_table, database, table).ok_or_else(|| {
        TableError::Unexpected {
            name: source_table.to_string(),
            sql: one_line(source_sql),
        }
    })?;
    let qualified = format!("{}.{}", quote_ident(database), quote_ident(table));
    let current = show_create_table(conn, &qualified).await.map_err(sql_err)?;
    let Some(current) = current else {
        conn.query_drop(create).await.map_err(sql_err)?;
        return Ok(Prepared::Created);
    };
    if existing == Existing::Refuse {
        return Err(TableError::Exists { table: name });
    }
    let current_norm = normalize(&current, table);
    if current_norm == normalize(source_sql, source_table)
        || current_norm == normalize(&lean, source_table)
    {
        conn.query_drop(format!("TRUNCATE TABLE {qualified}"))
            .await
            .map_err(sql_err)?;
        return Ok(Prepared::Emptied);
    }
    if existing == Existing::ReuseIfSame {
        return Err(TableError::Different {
            table: name,
            source_table: source_table.to_string(),
            dest_sql: one_line(&current),
            source_sql: one_line(source_sql),
        });
    }
    conn.query_drop(format!("DROP TABLE {qualified}"))
        .await
        .map_err(sql_err)?;
    conn.query_drop(create).await.map_err(sql_err)?;
    Ok(Prepared::Recreated)
}

/// Adds the secondary keys `prepare_table` left out, if they are missing;
/// does nothing when the table already has the source's definition.
pub async fn add_deferred_keys(
    conn: &mut Conn,
    database: &str,
    table: &str,
    source_sql: &str,
) -> Result<(), TableError> {
    let name = format!("{database}.{table}");
    let sql_err = |source| TableError::Sql {
        table: name.clone(),
        source,
    };
    let qualified = format!("{}.{}", quote_ident(database), quote_ident(table));
    let Some(current) = show_create_table(conn, &qualified).await.map_err(sql_err)? else {
        return Ok(());
    };
    let (_, keys) = defer_secondary_keys(source_sql);
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| {
            !current
                .lines()
                .any(|l| l.trim().trim_end_matches(',') == k.as_str())
        })
        .map(|k| format!("ADD {k}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    conn.query_drop(format!("ALTER TABLE {qualified} {}", missing.join(", ")))
        .await
        .map_err(sql_err)
}

/// The CREATE TABLE without its plain (non-unique, non-fulltext, non-spatial)
/// secondary keys, and those keys' definitions. Tables with foreign keys
/// keep all their keys (a foreign key needs its index from the start).
pub fn defer_secondary_keys(sql: &str) -> (String, Vec<String>) {
    let (Some(open), Some(close)) = (sql.find("(\n"), sql.rfind("\n)")) else {
        return (sql.to_string(), Vec::new());
    };
    if open >= close || sql.contains("FOREIGN KEY") {
        return (sql.to_string(), Vec::new());
    }
    let body = &sql[open + 2..close];
    let mut kept = Vec::new();
    let mut keys = Vec::new();
    for line in body.split('\n') {
        let def = line.trim().trim_end_matches(',');
        if def.starts_with("KEY ") {
            keys.push(def.to_string());
        } else {
            kept.push(format!("  {def}"));
        }
    }
    if keys.is_empty() {
        return (sql.to_string(), keys);
    }
    (
        format!(
            "{}\n{}{}",
            &sql[..open + 1],
            kept.join(",\n"),
            &sql[close..]
        ),
        keys,
    )
}

/// Whether `database.table` exists (any table type).
pub async fn exists(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<bool, mysql_async::Error> {
    let found: Option<String> = conn
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await?;
    Ok(found.is_some())
}

async fn show_create_table(
    conn: &mut Conn,
    qualified: &str,
) -> Result<Option<String>, mysql_async::Error> {
    match conn
        .query_first::<(Vec<u8>, Vec<u8>), _>(format!("SHOW CREATE TABLE {qualified}"))
        .await
    {
        Ok(row) => Ok(row.map(|(_, sql)| String::from_utf8_lossy(&sql).into_owned())),
        // ER_NO_SUCH_TABLE
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates (or replaces) a view of the source database on the destination.
pub async fn create_view(
    conn: &mut Conn,
    source_database: &str,
    database: &str,
    view: &str,
    source_sql: &str,
) -> Result<(), TableError> {
    let sql = rewrite_view(source_sql, source_database, database, view).ok_or_else(|| {
        TableError::Unexpected {
            name: view.to_string(),
            sql: one_line(source_sql),
        }
    })?;
    conn.query_drop(sql)
        .await
        .map_err(|source| TableError::Sql {
            table: format!("{database}.{view} (view)"),
            source,
        })
}

/// Creates (or replaces) sequence `database.name` with the source's
/// definition, its next value `next` (as the source's snapshot had it).
pub async fn create_sequence(
    conn: &mut Conn,
    database: &str,
    name: &str,
    source_sql: &str,
    next: &str,
    existing: Existing,
) -> Result<(), TableError> {
    let qualified = format!("{}.{}", quote_ident(database), quote_ident(name));
    let sql_err = |source| TableError::Sql {
        table: format!("{database}.{name} (sequence)"),
        source,
    };
    let unexpected = || TableError::Unexpected {
        name: name.to_string(),
        sql: one_line(source_sql),
    };
    let rest = source_sql
        .strip_prefix(&format!("CREATE SEQUENCE {} ", quote_ident(name)))
        .ok_or_else(unexpected)?;
    if next.is_empty()
        || !next
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(unexpected());
    }
    if existing == Existing::Refuse && exists(conn, database, name).await.map_err(sql_err)? {
        return Err(TableError::Exists {
            table: format!("{database}.{name}"),
        });
    }
    conn.query_drop(format!("CREATE OR REPLACE SEQUENCE {qualified} {rest}"))
        .await
        .map_err(sql_err)?;
    conn.query_drop(format!("DO SETVAL({qualified}, {next}, 0)"))
        .await
        .map_err(sql_err)
}

/// `CREATE TABLE `src` (…` → `CREATE TABLE `db`.`dest` (…`.
pub fn rewrite_create_table(
    sql: &str,
    source_table: &str,
    database: &str,
    table: &str,
) -> Option<String> {
    let head = format!("CREATE TABLE {} ", quote_ident(source_table));
    let rest = sql.strip_prefix(&head)?;
    Some(format!(
        "CREATE TABLE {}.{} {rest}",
        quote_ident(database),
        quote_ident(table)
    ))
}

/// The definition with the table's name and AUTO_INCREMENT counter taken out.
pub fn normalize(sql: &str, table: &str) -> String {
    let head = format!("CREATE TABLE {} ", quote_ident(table));
    let body = sql.strip_prefix(&head).unwrap_or(sql);
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    const COUNTER: &str = " AUTO_INCREMENT=";
    while let Some(i) = rest.find(COUNTER) {
        let after = &rest[i + COUNTER.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str(&rest[..i + COUNTER.len()]);
        } else {
            out.push_str(&rest[..i]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// `SHOW CREATE VIEW` text made to create the view in `database`.
pub fn rewrite_view(
    sql: &str,
    source_database: &str,
    database: &str,
    view: &str,
) -> Option<String> {
    let rest = sql.strip_prefix("CREATE ")?;
    // Drop `DEFINER=`user`@`host` `: the destination account need not exist.
    let rest = match rest.find("DEFINER=") {
        Some(i) => {
            let after = &rest[i..];
            let end = after
                .find(" SQL SECURITY")
                .or_else(|| after.find(" VIEW "))?;
            format!("{}{}", &rest[..i], after[end..].trim_start())
        }
        None => rest.to_string(),
    };
    // The name is qualified when the session's default database is another.
    let qualified = format!(
        "VIEW {}.{} AS ",
        quote_ident(source_database),
        quote_ident(view)
    );
    let plain = format!("VIEW {} AS ", quote_ident(view));
    let (i, name) = rest
        .find(&qualified)
        .map(|i| (i, qualified.as_str()))
        .or_else(|| rest.find(&plain).map(|i| (i, plain.as_str())))?;
    let body = rest[i + name.len()..].replace(
        &format!("{}.", quote_ident(source_database)),
        &format!("{}.", quote_ident(database)),
    );
    Some(format!(
        "CREATE OR REPLACE {}VIEW {}.{} AS {body}",
        &rest[..i],
        quote_ident(database),
        quote_ident(view)
    ))
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_columns_by_name() {
        use crate::change::period_columns;
        let sql = "CREATE TABLE `sve` (\n  `id` int(11) NOT NULL,\n  `r s` timestamp(6) GENERATED ALWAYS AS ROW START,\n  `re` timestamp(6) GENERATED ALWAYS AS ROW END,\n  PERIOD FOR SYSTEM_TIME (`r s`, `re`)\n) WITH SYSTEM VERSIONING";
        assert_eq!(period_columns(sql), Some(("r s".into(), "re".into())));
        assert_eq!(
            period_columns("CREATE TABLE `t` (\n  `id` int\n) WITH SYSTEM VERSIONING"),
            None
        );
    }

    #[test]
    fn table_rewrites() {
        let src = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4";
        assert_eq!(
            rewrite_create_table(src, "t", "d", "u").unwrap(),
            src.replace("CREATE TABLE `t`", "CREATE TABLE `d`.`u`")
        );
        assert!(rewrite_create_table(src, "x", "d", "u").is_none());
        let dest = src
            .replace("`t`", "`u`")
            .replace("AUTO_INCREMENT=42", "AUTO_INCREMENT=7");
        assert_eq!(normalize(src, "t"), normalize(&dest, "u"));
        assert!(normalize(src, "t").contains("NOT NULL AUTO_INCREMENT,"));
        let other = dest.replace("int(11)", "bigint(20)");
        assert_ne!(normalize(src, "t"), normalize(&other, "u"));
    }

    #[test]
    fn secondary_keys_are_deferred() {
        let src = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(10) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `c` (`c`),\n  KEY `k_1` (`k`),\n  KEY `kc` (`k`,`c`)\n) ENGINE=InnoDB";
        let (lean, keys) = defer_secondary_keys(src);
        assert_eq!(keys, vec!["KEY `k_1` (`k`)", "KEY `kc` (`k`,`c`)"]);
        assert_eq!(
            lean,
            "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(10) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `c` (`c`)\n) ENGINE=InnoDB"
        );
        let fk = "CREATE TABLE `t` (\n  `p` int,\n  KEY `p` (`p`),\n  CONSTRAINT `f` FOREIGN KEY (`p`) REFERENCES `u` (`id`)\n) ENGINE=InnoDB";
        assert_eq!(defer_secondary_keys(fk), (fk.to_string(), Vec::new()));
        let none = "CREATE TABLE `t` (\n  `id` int\n) ENGINE=InnoDB";
        assert_eq!(defer_secondary_keys(none), (none.to_string(), Vec::new()));
    }

    #[test]
    fn view_rewrite() {
        let src = "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select `s`.`t`.`a` AS `a` from `s`.`t`";
        assert_eq!(
            rewrite_view(src, "s", "d", "v").unwrap(),
            "CREATE OR REPLACE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `d`.`v` AS select `d`.`t`.`a` AS `a` from `d`.`t`"
        );
        let qualified = "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `s`.`v` AS select `w`.`id` AS `id` from `s`.`w`";
        assert_eq!(
            rewrite_view(qualified, "s", "d", "v").unwrap(),
            "CREATE OR REPLACE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `d`.`v` AS select `w`.`id` AS `id` from `d`.`w`"
        );
    }
}
