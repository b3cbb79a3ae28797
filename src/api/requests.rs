//! Request bodies as the Doris syncer's clients send them, and their parsing.
//!
//! Unknown fields are refused (a misspelt `allow_table_exists` must not be
//! ignored silently). `port` may be a number or a string; an empty `table` is
//! the same as none, as Doris clients send it for database jobs.

use super::responses::ApiError;
use crate::config::TlsPolicy;
use crate::hostmap::HostMapping;
use crate::job::spec::{Endpoint, JobSpec};
use crate::secret::Secret;
use crate::tls::{TlsMode, TlsOptions};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Parses a JSON body; an empty body reads as `{}`, so the error then names
/// the first missing field.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "invalid request body: expected a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::BadRequest(format!("invalid request body: {inner}"))
        } else {
            ApiError::BadRequest(format!("invalid request body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    Ok(value)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRequest {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    pub src: EndpointRequest,
    pub dest: EndpointRequest,
    #[serde(default)]
    pub allow_table_exists: bool,
    /// `"fullsync"` (default) or `"stop"`.
    #[serde(default)]
    pub on_binlog_purged: crate::job::spec::OnPurged,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    pub host: String,
    #[serde(deserialize_with = "port")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: String,
    pub database: String,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub host_mapping: BTreeMap<String, String>,
    /// `{"mode", "ca", "cert", "key", "server_name"}`; absent: the service's
    /// `tls.default_mode`.
    #[serde(default)]
    pub tls: Option<TlsRequest>,
    /// `src` only: the minder's arbitrator (`host:port`) of a minded Galera
    /// source.
    #[serde(default)]
    pub minder: Option<String>,
}

/// A side's `tls` as requests give it: without `mode`, `verify_ca` when a
/// `ca` is given (as MySQL's clients do), else the service's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRequest {
    #[serde(default)]
    pub mode: Option<TlsMode>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
}

impl TlsRequest {
    /// The checked settings (files readable, not below the minimum); the
    /// message names the field under `field`.
    pub fn into_options(self, field: &str, policy: &TlsPolicy) -> Result<TlsOptions, ApiError> {
        let mode = self.mode.unwrap_or(if self.ca.is_some() {
            TlsMode::VerifyCa.max(policy.default_mode)
        } else {
            policy.default_mode
        });
        let tls = TlsOptions {
            mode,
            ca: self.ca,
            cert: self.cert,
            key: self.key,
            server_name: self.server_name,
        };
        tls.validate(field).map_err(ApiError::BadRequest)?;
        policy
            .check(&format!("{field}.mode"), tls.mode)
            .map_err(ApiError::BadRequest)?;
        Ok(tls)
    }
}

impl CreateRequest {
    pub fn into_spec(self, policy: &TlsPolicy) -> Result<JobSpec, ApiError> {
        Ok(JobSpec {
            name: self.name,
            src: self.src.into_endpoint("src", policy)?,
            dest: self.dest.into_endpoint("dest", policy)?,
            allow_table_exists: self.allow_table_exists,
            on_binlog_purged: self.on_binlog_purged,
        })
    }
}

impl EndpointRequest {
    fn into_endpoint(self, side: &str, policy: &TlsPolicy) -> Result<Endpoint, ApiError> {
        let host_mapping = HostMapping::from_request(self.host_mapping)
            .map_err(|e| ApiError::BadRequest(format!("{side}.{e}")))?;
        let tls = self
            .tls
            .unwrap_or_default()
            .into_options(&format!("{side}.tls"), policy)?;
        let minder = match self.minder.map(|m| m.trim().to_string()) {
            None => None,
            Some(m) if side != "src" => {
                return Err(ApiError::BadRequest(format!(
                    "{side}.minder ({m}): only a source is followed through a minder"
                )))
            }
            Some(m)
                if crate::source::topology::split(&m)
                    .is_none_or(|(h, p)| h.is_empty() || p == 0) =>
            {
                return Err(ApiError::BadRequest(format!(
                    "src.minder ({m:?}): the arbitrator's address as host:port"
                )))
            }
            Some(m) => Some(m),
        };
        Ok(Endpoint {
            host: self.host.trim().to_string(),
            port: self.port,
            user: self.user,
            password: Secret::new(self.password),
            database: self.database,
            table: self.table.filter(|t| !t.is_empty()),
            host_mapping,
            tls,
            minder,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTlsRequest {
    pub name: String,
    #[serde(default)]
    pub src: Option<TlsRequest>,
    #[serde(default)]
    pub dest: Option<TlsRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMappingRequest {
    pub name: String,
    #[serde(default)]
    pub src_host_mapping: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub dest_host_mapping: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialRequest {
    pub name: String,
    /// The source table to copy again.
    pub table: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub name: String,
    /// Source tables to compare; all of the job's when absent.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    pub name: String,
    /// The source table whose differing ranges are copied again.
    pub table: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    pub name: String,
    pub skip_by: String,
    #[serde(default, deserialize_with = "commit_seq")]
    pub skip_commit_seq: Option<u64>,
}

/// A commit seq: a non-negative integer.
fn commit_seq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
        Some(other) => Err(de::Error::custom(format!(
            "skip_commit_seq {other} is not a commit seq (a whole number, 0 or more)"
        ))),
    }
}

/// A port as a number or a numeric string, 1 to 65535.
fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(serde_json::Number),
        Text(String),
    }
    let (value, shown) = match Port::deserialize(deserializer)
        .map_err(|_| de::Error::custom("port must be a number or a string of digits"))?
    {
        Port::Number(n) => (n.as_u64(), n.to_string()),
        Port::Text(s) => (s.trim().parse::<u64>().ok(), format!("{s:?}")),
    };
    match value {
        Some(p @ 1..=65535) => Ok(p as u16),
        _ => Err(de::Error::custom(format!(
            "port {shown} is not a port number from 1 to 65535"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(src_port: &str) -> Result<CreateRequest, ApiError> {
        let body = format!(
            r#"{{"name":"j","src":{{"host":"h","port":{src_port},"user":"u","password":"p","database":"d","table":""}},
               "dest":{{"host":"h","port":3306,"user":"u","database":"d2"}}}}"#
        );
        parse(body.as_bytes())
    }

    #[test]
    fn port_as_number_or_string() {
        assert_eq!(create("3306").unwrap().src.port, 3306);
        assert_eq!(create("\"13306\"").unwrap().src.port, 13306);
        for bad in ["0", "65536", "\"x\"", "-1", "1.5", "true"] {
            let err = create(bad).unwrap_err().to_string();
            assert!(err.contains("port"), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_table_means_database_job() {
        let spec = create("1")
            .unwrap()
            .into_spec(&TlsPolicy::default())
            .unwrap();
        assert_eq!(spec.src.table, None);
        assert_eq!(spec.dest.password.expose(), "");
    }

    #[test]
    fn tls_defaults_to_the_policy_and_respects_its_minimum() {
        let strict = TlsPolicy {
            default_mode: crate::tls::TlsMode::Required,
            minimum_mode: crate::tls::TlsMode::Required,
        };
        let spec = create("1").unwrap().into_spec(&strict).unwrap();
        assert_eq!(spec.src.tls.mode, crate::tls::TlsMode::Required);
        let body = r#"{"name":"j","src":{"host":"h","port":1,"user":"u","database":"d","tls":{"mode":"disabled"}},
               "dest":{"host":"h","port":3306,"user":"u","database":"d2"}}"#;
        let err = parse::<CreateRequest>(body.as_bytes())
            .unwrap()
            .into_spec(&strict)
            .unwrap_err()
            .to_string();
        assert!(err.contains("src.tls.mode disabled is below"), "{err}");
        let body = r#"{"name":"j","src":{"host":"h","port":1,"user":"u","database":"d","tls":{"mode":"strict"}},
               "dest":{"host":"h","port":3306,"user":"u","database":"d2"}}"#;
        let err = parse::<CreateRequest>(body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `strict`"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "missing field `name`"),
            ("{", "EOF while parsing"),
            (r#"{"name": "j"} x"#, "trailing characters"),
            (
                r#"{"name": 5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (r#"{"name": "j", "extra": 1}"#, "unknown field `extra`"),
            ("[]", "expected a JSON object"),
            ("\"name\"", "expected a JSON object"),
        ];
        for (body, want) in cases {
            let err = parse::<NameRequest>(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
