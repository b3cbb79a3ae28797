//! The Emit envelope of seed 001: `{version, job_id, job_type, timestamp,
//! user_name, paras}` in, `{version, error_code, error_info, status,
//! job_id, attachment}` out. Values are strings as in the seed; numbers
//! are accepted too. A refused request names what was wrong and creates
//! nothing.

use crate::fields::{kind, Fields};
use serde_json::{json, Map, Value};

/// A refused request: its error code and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub info: String,
}

impl Refused {
    pub fn bad(info: impl Into<String>) -> Refused {
        Refused {
            code: codes::BAD_REQUEST,
            info: info.into(),
        }
    }
}

/// The error codes answers carry (strings, as in the seed).
pub mod codes {
    pub const OK: &str = "0";
    pub const BAD_REQUEST: &str = "400";
    pub const NOT_FOUND: &str = "404";
    pub const CONFLICT: &str = "409";
    pub const BUSY: &str = "423";
    pub const NOT_BUILT: &str = "501";
    pub const UNREACHABLE: &str = "502";
    pub const STEP_FAILED: &str = "500";
    pub const CANCELLED: &str = "499";
    pub const UNKNOWN_STATE: &str = "520";
}

/// A request as read.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub version: String,
    /// Empty when the client let the manager choose.
    pub job_id: String,
    pub job_type: String,
    pub user_name: String,
    pub paras: Map<String, Value>,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, Refused> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Refused::bad(format!("the body is not JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(Refused::bad("the body is not a JSON object"));
        };
        let f = Fields::new(&map, "");
        let job_type = f.need("job_type").map_err(Refused::bad)?;
        let paras = match map.get("paras") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(other) => {
                return Err(Refused::bad(format!(
                    "paras: expected an object, got {}",
                    kind(other)
                )))
            }
        };
        Ok(Envelope {
            version: f
                .text("version")
                .map_err(Refused::bad)?
                .unwrap_or_else(|| "1.0".into()),
            job_id: f.text("job_id").map_err(Refused::bad)?.unwrap_or_default(),
            job_type,
            user_name: f
                .text("user_name")
                .map_err(Refused::bad)?
                .unwrap_or_default(),
            paras,
        })
    }

    pub fn paras(&self) -> Paras<'_> {
        Paras(Fields::new(&self.paras, "paras."))
    }

    /// `paras.dry_run: "1"`.
    pub fn dry_run(&self) -> Result<bool, Refused> {
        Ok(self.paras().int("dry_run", 0, 1)?.unwrap_or(0) == 1)
    }
}

/// Typed reads of a request's `paras` ([`crate::fields`]), refused as bad
/// requests.
pub struct Paras<'a>(Fields<'a>);

impl Paras<'_> {
    pub fn text(&self, key: &str) -> Result<Option<String>, Refused> {
        self.0.text(key).map_err(Refused::bad)
    }

    pub fn need(&self, key: &str) -> Result<String, Refused> {
        self.0.need(key).map_err(Refused::bad)
    }

    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, Refused> {
        self.0.int(key, min, max).map_err(Refused::bad)
    }

    pub fn need_int(&self, key: &str, min: i64, max: i64) -> Result<i64, Refused> {
        self.0.need_int(key, min, max).map_err(Refused::bad)
    }

    pub fn choice(&self, key: &str, allowed: &[&str]) -> Result<String, Refused> {
        self.0.choice(key, allowed).map_err(Refused::bad)
    }

    pub fn list(&self, key: &str) -> Result<Vec<String>, Refused> {
        self.0.list(key).map_err(Refused::bad)
    }
}

/// A host address: an IP address or a host name, no port, no spaces.
pub fn check_host(key: &str, host: &str) -> Result<(), Refused> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    if ok && (host.parse::<std::net::IpAddr>().is_ok() || !host.contains(':')) {
        Ok(())
    } else {
        Err(Refused::bad(format!(
            "paras.{key}: {host:?} is not a host address"
        )))
    }
}

/// An absolute directory without `..`.
pub fn check_dir(key: &str, dir: &str) -> Result<(), Refused> {
    let p = std::path::Path::new(dir);
    if p.is_absolute() && !p.components().any(|c| c.as_os_str() == "..") {
        Ok(())
    } else {
        Err(Refused::bad(format!(
            "paras.{key}: {dir:?} must be an absolute path without .."
        )))
    }
}

/// `A-B`, 1 ≤ A ≤ B ≤ 65535.
pub fn port_range(key: &str, text: &str) -> Result<(u16, u16), Refused> {
    let bad = || {
        Refused::bad(format!(
            "paras.{key}: {text:?} is not a port range like 45000-48000"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// The answer to an accepted asynchronous job.
pub fn accepted(version: &str, job_id: &str) -> Value {
    json!({"version": version, "error_code": codes::OK, "error_info": "", "status": "accept",
           "job_id": job_id, "attachment": null})
}

/// A synchronous job's answer.
pub fn done(version: &str, info: &str, attachment: Value) -> Value {
    json!({"version": version, "error_code": codes::OK, "error_info": info, "status": "done",
           "job_id": "", "job_type": "", "attachment": attachment})
}

/// A refused request's answer.
pub fn failed(version: &str, job_id: &str, r: &Refused) -> Value {
    json!({"version": version, "error_code": r.code, "error_info": r.info, "status": "failed",
           "job_id": job_id, "attachment": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_reads_strings_and_numbers_and_refuses_the_rest() {
        let e = Envelope::parse(
            br#"{"version":"1.0","job_id":"","job_type":"create_machine","timestamp":"1435749309",
                 "user_name":"kunlun_test","paras":{"hostaddr":"127.0.0.11","total_mem":8192}}"#,
        )
        .unwrap();
        assert_eq!(e.paras().need_int("total_mem", 1, 1 << 30).unwrap(), 8192);
        assert!(Envelope::parse(b"{").unwrap_err().info.contains("not JSON"));
        assert!(Envelope::parse(br#"{"paras":{}}"#)
            .unwrap_err()
            .info
            .contains("job_type is missing"));
        assert!(Envelope::parse(br#"{"job_type":"x","paras":[1]}"#)
            .unwrap_err()
            .info
            .contains("paras: expected an object"));
        let e = Envelope::parse(br#"{"job_type":"x","paras":{"n":"ten","h":"a b","r":"9-1"}}"#)
            .unwrap();
        assert!(e
            .paras()
            .int("n", 0, 9)
            .unwrap_err()
            .info
            .contains("not a whole number"));
        assert!(check_host("h", "a b").is_err());
        assert!(port_range("r", "9-1").is_err());
        assert_eq!(port_range("r", "45000-48000").unwrap(), (45000, 48000));
    }
}
