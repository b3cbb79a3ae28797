//! What a job replicates: its name, the source and destination endpoints, and
//! the scope (a whole database, or one table when both sides name a table).
//!
//! `JobSpec::validate` holds every rule that can be checked without a server;
//! `preflight` checks the rest against the servers before a job is stored.

use serde::{Deserialize, Serialize};

/// Longest job name accepted; it also bounds the meta store's key column.
pub const MAX_NAME_LEN: usize = 128;
/// MySQL's and MariaDB's limit on database and table names.
const MAX_IDENT_LEN: usize = 64;

pub use crate::db::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncType {
    #[serde(rename = "db_sync")]
    Db,
    #[serde(rename = "table_sync")]
    Table,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub src: Endpoint,
    pub dest: Endpoint,
    #[serde(default)]
    pub allow_table_exists: bool,
    /// What the job does when the source no longer has the binlog at its
    /// position.
    #[serde(default)]
    pub on_binlog_purged: OnPurged,
}

/// What a job does when the source purged the binlog it still needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPurged {
    /// Copy the tables again (a new full sync), as the Doris syncer does.
    #[default]
    Fullsync,
    /// Stop with an error; an operator decides.
    Stop,
}

impl JobSpec {
    /// What the data path copies and where.
    pub fn route(&self) -> crate::sync::Route {
        crate::sync::Route {
            name: self.name.clone(),
            src: self.src.clone(),
            dest: self.dest.clone(),
            allow_table_exists: self.allow_table_exists,
        }
    }

    pub fn sync_type(&self) -> SyncType {
        if self.src.table.is_some() {
            SyncType::Table
        } else {
            SyncType::Db
        }
    }

    /// Every rule that needs no server. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name)?;
        for (side, ep) in [("src", &self.src), ("dest", &self.dest)] {
            if ep.host.trim().is_empty() {
                return Err(format!("{side}.host is empty"));
            }
            if ep.port == 0 {
                return Err(format!("{side}.port must be between 1 and 65535"));
            }
            if ep.user.is_empty() {
                return Err(format!("{side}.user is empty"));
            }
            validate_ident(&format!("{side}.database"), &ep.database)?;
            if let Some(table) = &ep.table {
                validate_ident(&format!("{side}.table"), table)?;
            }
        }
        match (&self.src.table, &self.dest.table) {
            (Some(_), None) => Err(
                "src.table is set but dest.table is not: name a table on both sides (table job) or on neither (database job)"
                    .into(),
            ),
            (None, Some(_)) => Err(
                "dest.table is set but src.table is not: name a table on both sides (table job) or on neither (database job)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Job names are used in URLs, metric labels and log fields: keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} characters"));
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(format!(
            "name {name:?} may only contain letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

fn validate_ident(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.chars().count() > MAX_IDENT_LEN {
        return Err(format!("{field} is longer than {MAX_IDENT_LEN} characters"));
    }
    if value.contains('\0') || value.ends_with(' ') {
        return Err(format!(
            "{field} {value:?} is not a valid name (NUL byte or trailing space)"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hostmap::HostMapping;
    use crate::secret::Secret;
    use crate::tls::TlsOptions;

    pub fn endpoint(db: &str, table: Option<&str>) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: Secret::new("pw"),
            database: db.into(),
            table: table.map(str::to_string),
            host_mapping: HostMapping::default(),
            tls: TlsOptions::default(),
            minder: None,
        }
    }

    pub fn spec(name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            src: endpoint("a", None),
            dest: endpoint("b", None),
            allow_table_exists: false,
            on_binlog_purged: OnPurged::Fullsync,
        }
    }

    #[test]
    fn names() {
        for ok in ["j", "job_1", "a.b-c", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_on_both_sides_or_neither() {
        let mut s = spec("j");
        assert_eq!(s.sync_type(), SyncType::Db);
        s.src.table = Some("t".into());
        assert!(s.validate().unwrap_err().contains("dest.table is not"));
        s.dest.table = Some("t2".into());
        assert!(s.validate().is_ok());
        assert_eq!(s.sync_type(), SyncType::Table);
        s.src.table = None;
        assert!(s.validate().unwrap_err().contains("src.table is not"));
    }

    #[test]
    fn field_rules() {
        type Case = (fn(&mut JobSpec), &'static str);
        let cases: [Case; 5] = [
            (|s| s.src.host = " ".into(), "src.host is empty"),
            (|s| s.dest.port = 0, "dest.port must be"),
            (|s| s.src.user = "".into(), "src.user is empty"),
            (|s| s.dest.database = "".into(), "dest.database is empty"),
            (
                |s| s.src.database = "x".repeat(65),
                "src.database is longer",
            ),
        ];
        for (mutate, want) in cases {
            let mut s = spec("j");
            mutate(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(want), "{err} !~ {want}");
        }
    }

    #[test]
    fn serializing_masks_passwords() {
        let json = serde_json::to_string(&spec("j")).unwrap();
        assert!(!json.contains("\"pw\""), "{json}");
        assert!(json.contains("******"));
    }
}
