//! Table definitions on the compute layer, as text: where a table's rows
//! live ([`Placement`]: one shard, or one backend table per partition),
//! the backend table a shard holds, and the Spider table every compute
//! node holds over it. Pure, table-tested.
//!
//! A Spider table names its backend explicitly (server, database and
//! table in its COMMENT), so that renaming it on a compute node never
//! points it somewhere else by accident. The servers are `ccr_s<shard>`,
//! kept pointing at each shard's current primary.

use crate::db::quote_ident;
use serde::{Deserialize, Serialize};

/// The Spider server of a shard on every compute node.
pub fn server_name(shard: i64) -> String {
    format!("ccr_s{shard}")
}

/// A partition of a spread table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub shard: i64,
    /// Its backend table on that shard.
    pub table: String,
    /// `VALUES LESS THAN (10)`, `VALUES IN (1,2)`; empty for HASH / KEY.
    #[serde(default)]
    pub values: String,
}

/// How a spread table is partitioned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioning {
    /// What follows `PARTITION BY`: `HASH (`id`)`.
    pub by: String,
    pub parts: Vec<Part>,
}

/// Where a table's rows live, and its definition (columns and keys, table
/// options) as the compute nodes hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// `(\n  `id` int(11) NOT NULL, …\n)`.
    pub body: String,
    /// `DEFAULT CHARSET=utf8mb4 COLLATE=…` (no engine, comment or
    /// auto-increment counter).
    pub options: String,
    /// The shard holding a table that is not spread (0 when spread).
    pub shard: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<Partitioning>,
    /// `placing` (its backends being made, its rows copied), `placed`,
    /// `moving` (an `expand_cluster` job moves it).
    pub state: String,
}

impl Placement {
    /// Every `(shard, backend table)` holding its rows.
    pub fn backends(&self, table: &str) -> Vec<(i64, String)> {
        match &self.partitioning {
            Some(p) => p.parts.iter().map(|x| (x.shard, x.table.clone())).collect(),
            None => vec![(self.shard, table.to_string())],
        }
    }

    /// The statement that makes a backend table.
    pub fn backend_sql(&self, db: &str, backend: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} {} ENGINE=InnoDB {}",
            quote_ident(db),
            quote_ident(backend),
            self.body,
            self.options
        )
    }

    /// The Spider table `name` on a compute node over the rows of `table`
    /// (its backends), `to_shard` overriding the shard of a table that is
    /// not spread (a move's switch).
    pub fn spider_sql(&self, db: &str, name: &str, table: &str, to_shard: Option<i64>) -> String {
        let head = format!(
            "CREATE TABLE {}.{} {} ENGINE=SPIDER {}",
            quote_ident(db),
            quote_ident(name),
            self.body,
            self.options
        );
        match &self.partitioning {
            None => format!(
                "{head} COMMENT='{}'",
                connection(to_shard.unwrap_or(self.shard), db, table)
            ),
            Some(p) => {
                let parts: Vec<String> = p
                    .parts
                    .iter()
                    .map(|x| {
                        let values = if x.values.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", x.values)
                        };
                        format!(
                            "PARTITION {}{values} COMMENT = '{}' ENGINE = SPIDER",
                            quote_ident(&x.name),
                            connection(x.shard, db, &x.table)
                        )
                    })
                    .collect();
                format!(
                    "{head} COMMENT='wrapper \"mysql\"' PARTITION BY {} ({})",
                    p.by,
                    parts.join(", ")
                )
            }
        }
    }

    /// The shards this table's rows are on.
    pub fn shards(&self) -> Vec<i64> {
        let mut s: Vec<i64> = self.backends("").iter().map(|b| b.0).collect();
        s.sort();
        s.dedup();
        s
    }
}

fn connection(shard: i64, db: &str, table: &str) -> String {
    format!(
        "wrapper \"mysql\", srv \"{}\", database \"{db}\", table \"{table}\"",
        server_name(shard)
    )
}

/// Names the compute layer takes: no quote or backslash (they would end
/// a Spider connection string), at most 64 characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err(format!("{what} {name:?}: 1 to 64 characters"));
    }
    if name.contains(['"', '\'', '\\']) {
        return Err(format!(
            "{what} {name:?}: a quote or a backslash cannot be named in a Spider connection"
        ));
    }
    Ok(())
}

/// A `SHOW CREATE TABLE` cut in parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub body: String,
    /// The table options without engine, comment and auto-increment
    /// counter.
    pub options: String,
    /// The table's own comment (not a Spider connection), if any.
    pub comment: Option<String>,
    /// It is partitioned.
    pub partitioned: bool,
}

/// Cuts `SHOW CREATE TABLE`'s text: the body runs from the first `(` to
/// the line that starts with `)`; the table options follow on that line;
/// a partition clause, if any, on the next lines.
pub fn split(show: &str) -> Result<Shown, String> {
    let open = show
        .find('(')
        .ok_or_else(|| "no column list in the definition".to_string())?;
    let close = show
        .find("\n)")
        .ok_or_else(|| "no end of the column list in the definition".to_string())?;
    let body = show[open..close + 2].to_string();
    let rest = &show[close + 2..];
    let (options, partition) = match rest.find('\n') {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (options, comment) = strip_options(options);
    Ok(Shown {
        body,
        options,
        comment,
        partitioned: partition.starts_with("PARTITION BY")
            || partition.starts_with("/*!50100 PARTITION BY"),
    })
}

/// Table options without `ENGINE=`, `AUTO_INCREMENT=` and `COMMENT=`
/// (returned apart, unquoted).
fn strip_options(options: &str) -> (String, Option<String>) {
    let mut kept = Vec::new();
    let mut comment = None;
    let b = options.trim();
    let mut rest = b;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        // One option: up to the next space outside a quoted string.
        let mut end = rest.len();
        let mut quoted = false;
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\'' if quoted && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                b'\\' if quoted => i += 1,
                b'\'' => quoted = !quoted,
                b' ' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let word = &rest[..end];
        rest = &rest[end..];
        let upper = word.to_ascii_uppercase();
        if upper.starts_with("ENGINE=") || upper.starts_with("AUTO_INCREMENT=") {
            continue;
        }
        if let Some(v) = word.strip_prefix("COMMENT=") {
            let v = v.trim_matches('\'').replace("''", "'");
            if !v.starts_with("wrapper ") {
                comment = Some(v);
            }
            continue;
        }
        kept.push(word.to_string());
    }
    (kept.join(" "), comment)
}

/// A partition as `information_schema.PARTITIONS` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub method: String,
    pub expression: String,
    pub description: Option<String>,
    pub sub: bool,
}

/// The partitioning of a table from its listed partitions, each put on a
/// shard round robin from `first` (index into `shards`); a partition's
/// backend is the table's own name on the first shard of each, then
/// `TABLE__pNAME`.
pub fn partitioning(
    table: &str,
    listed: &[Listed],
    shards: &[i64],
    first: usize,
) -> Result<Partitioning, String> {
    let head = listed.first().ok_or("no partition listed")?;
    if listed.iter().any(|l| l.sub) {
        return Err("subpartitions cannot be spread over shards: partition by one level".into());
    }
    if shards.is_empty() {
        return Err("the cluster has no shard".into());
    }
    let method = head.method.as_str();
    let by = match method {
        "RANGE COLUMNS" | "LIST COLUMNS" => format!("{method}({})", head.expression),
        "HASH" | "LINEAR HASH" | "KEY" | "LINEAR KEY" | "RANGE" | "LIST" => {
            format!("{method} ({})", head.expression)
        }
        other => {
            return Err(format!(
                "partitioning by {other} cannot be spread over shards"
            ))
        }
    };
    let mut used: Vec<i64> = Vec::new();
    let mut parts = Vec::new();
    for (i, l) in listed.iter().enumerate() {
        let shard = shards[(first + i) % shards.len()];
        let backend = if used.contains(&shard) {
            format!("{table}__p{}", l.name)
        } else {
            used.push(shard);
            table.to_string()
        };
        check_name("the backend table", &backend)?;
        let d = l.description.clone().unwrap_or_default();
        let values = match method {
            "RANGE" if d == "MAXVALUE" => "VALUES LESS THAN MAXVALUE".to_string(),
            "RANGE" | "RANGE COLUMNS" => format!("VALUES LESS THAN ({d})"),
            "LIST" | "LIST COLUMNS" if d == "DEFAULT" => "DEFAULT".to_string(),
            "LIST" | "LIST COLUMNS" => format!("VALUES IN ({d})"),
            _ => String::new(),
        };
        parts.push(Part {
            name: l.name.clone(),
            shard,
            table: backend,
            values,
        });
    }
    Ok(Partitioning { by, parts })
}

/// The shard whose backend a compute node's Spider table reads, from its
/// `SHOW CREATE TABLE` (`None`: spread, or not a Spider table of ours).
pub fn shard_of(show: &str) -> Option<i64> {
    if show.contains("PARTITION BY") {
        return None;
    }
    let at = show.find("srv \"ccr_s")? + "srv \"ccr_s".len();
    let digits: String = show[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `v` varchar(20) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci COMMENT='it''s mine'";

    #[test]
    fn a_definition_is_cut_into_body_and_options() {
        let s = split(SHOWN).unwrap();
        assert!(s.body.starts_with("(\n  `id`"));
        assert!(s.body.ends_with("\n)"));
        assert_eq!(
            s.options,
            "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
        );
        assert_eq!(s.comment.as_deref(), Some("it's mine"));
        assert!(!s.partitioned);
        let p = split(&format!("{SHOWN}\n PARTITION BY HASH (`id`)\nPARTITIONS 2")).unwrap();
        assert!(p.partitioned);
        assert_eq!(p.options, s.options);
        let spider = split("CREATE TABLE `t` (\n  `id` int\n) ENGINE=SPIDER DEFAULT CHARSET=latin1 COMMENT='wrapper \"mysql\", srv \"ccr_s2\", database \"d\", table \"t\"'").unwrap();
        assert_eq!(spider.comment, None);
        assert_eq!(spider.options, "DEFAULT CHARSET=latin1");
    }

    #[test]
    fn partitions_go_round_robin_with_distinct_backends() {
        let listed: Vec<Listed> = (0..3)
            .map(|i| Listed {
                name: format!("p{i}"),
                method: "HASH".into(),
                expression: "`id`".into(),
                description: None,
                sub: false,
            })
            .collect();
        let p = partitioning("t", &listed, &[1, 2], 0).unwrap();
        assert_eq!(p.by, "HASH (`id`)");
        let got: Vec<(i64, &str)> = p
            .parts
            .iter()
            .map(|x| (x.shard, x.table.as_str()))
            .collect();
        assert_eq!(got, vec![(1, "t"), (2, "t"), (1, "t__pp2")]);
        let range = [
            Listed {
                name: "a".into(),
                method: "RANGE".into(),
                expression: "`id`".into(),
                description: Some("10".into()),
                sub: false,
            },
            Listed {
                name: "b".into(),
                method: "RANGE".into(),
                expression: "`id`".into(),
                description: Some("MAXVALUE".into()),
                sub: false,
            },
        ];
        let r = partitioning("t", &range, &[1, 2], 1).unwrap();
        assert_eq!(r.parts[0].values, "VALUES LESS THAN (10)");
        assert_eq!(r.parts[1].values, "VALUES LESS THAN MAXVALUE");
        assert_eq!(r.parts[0].shard, 2);
        let placement = Placement {
            body: "(\n  `id` int\n)".into(),
            options: "DEFAULT CHARSET=latin1".into(),
            shard: 0,
            partitioning: Some(r),
            state: "placed".into(),
        };
        let sql = placement.spider_sql("d", "t", "t", None);
        assert!(sql.contains("PARTITION BY RANGE (`id`) (PARTITION `a` VALUES LESS THAN (10) COMMENT = 'wrapper \"mysql\", srv \"ccr_s2\", database \"d\", table \"t\"' ENGINE = SPIDER"), "{sql}");
        assert_eq!(placement.shards(), vec![1, 2]);
        assert_eq!(shard_of(&sql), None);
    }

    #[test]
    fn a_table_on_one_shard_names_its_backend() {
        let placement = Placement {
            body: "(\n  `id` int\n)".into(),
            options: String::new(),
            shard: 3,
            partitioning: None,
            state: "placed".into(),
        };
        let sql = placement.spider_sql("d", "t__ccr_new", "t", None);
        assert_eq!(sql, "CREATE TABLE `d`.`t__ccr_new` (\n  `id` int\n) ENGINE=SPIDER  COMMENT='wrapper \"mysql\", srv \"ccr_s3\", database \"d\", table \"t\"'");
        assert_eq!(shard_of(&sql), Some(3));
        assert_eq!(
            shard_of(&placement.spider_sql("d", "t", "t", Some(4))),
            Some(4)
        );
        assert!(check_name("table", "a\"b").is_err());
        assert!(check_name("table", "ok").is_ok());
    }
}
