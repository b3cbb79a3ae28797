//! The site's configuration: one TOML document (see `doc/minder.md`) for
//! every party, kept in a table of the cluster itself and, by each party, as
//! a local copy in its state directory.
//!
//! Checked as a whole before it is used or stored: unknown keys, duplicate
//! serials or node names, a `primary_dc` no dbserver has, an address that is
//! not `host:port` — each refused naming its line.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::Spanned;

/// Defaults of `[site]`.
pub const REPORT_INTERVAL_S: u64 = 1;
pub const RESEND_S: u64 = 3;
pub const CONFIRM_S: u64 = 1;
pub const HOLD_S: u64 = 30;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    site: FileSite,
    #[serde(default)]
    arbitrator: Vec<FileArbitrator>,
    #[serde(default)]
    dbserver: Vec<FileDbserver>,
    #[serde(default)]
    dbclient: Vec<FileDbclient>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSite {
    primary_dc: Spanned<String>,
    report_interval_s: Option<Spanned<u64>>,
    resend_s: Option<Spanned<u64>>,
    confirm_s: Option<Spanned<u64>>,
    hold_s: Option<Spanned<u64>>,
    write_backend: String,
    read_backend: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArbitrator {
    serial: Spanned<u32>,
    address: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDbserver {
    serial: Spanned<u32>,
    name: Spanned<String>,
    dc: String,
    address: Spanned<String>,
    mysql: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDbclient {
    serial: Spanned<u32>,
    address: Spanned<String>,
    haproxy_socket: String,
}

/// The checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub primary_dc: String,
    pub report_interval_s: u64,
    pub resend_s: u64,
    pub confirm_s: u64,
    pub hold_s: u64,
    pub write_backend: String,
    pub read_backend: String,
    pub arbitrators: Vec<Arbitrator>,
    pub dbservers: Vec<Dbserver>,
    pub dbclients: Vec<Dbclient>,
    /// The document it was read from, as stored.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arbitrator {
    pub serial: u32,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dbserver {
    pub serial: u32,
    pub name: String,
    pub dc: String,
    pub address: String,
    pub mysql: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dbclient {
    pub serial: u32,
    pub address: String,
    pub haproxy_socket: String,
}

/// Why a configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SiteError {
    /// 1-based; 0 when the document as a whole is wrong.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn at<T>(text: &str, s: &Spanned<T>, message: String) -> SiteError {
    SiteError {
        line: line_of(text, s.span().start),
        message,
    }
}

/// `host:port`, the port a number.
fn check_address<T: AsRef<str>>(text: &str, a: &Spanned<T>, what: &str) -> Result<(), SiteError> {
    let v = a.get_ref().as_ref();
    let ok = v
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(at(text, a, format!("{what} {v:?} is not host:port")))
    }
}

impl Site {
    /// Parses and checks a document.
    pub fn parse(text: &str) -> Result<Site, SiteError> {
        let file: File = toml::from_str(text).map_err(|e| SiteError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().to_string(),
        })?;
        let positive = |v: &Option<Spanned<u64>>, default: u64, key: &str| match v {
            None => Ok(default),
            Some(s) if *s.get_ref() > 0 => Ok(*s.get_ref()),
            Some(s) => Err(at(text, s, format!("{key} must be at least 1"))),
        };
        let mut seen = BTreeSet::new();
        for a in &file.arbitrator {
            if !seen.insert(*a.serial.get_ref()) {
                return Err(at(
                    text,
                    &a.serial,
                    format!("arbitrator serial {} appears twice", a.serial.get_ref()),
                ));
            }
            check_address(text, &a.address, "address")?;
        }
        if file.arbitrator.is_empty() {
            return Err(SiteError {
                line: 0,
                message: "no [[arbitrator]]: the site needs one".into(),
            });
        }
        let (mut serials, mut names) = (BTreeSet::new(), BTreeSet::new());
        for d in &file.dbserver {
            if !serials.insert(*d.serial.get_ref()) {
                return Err(at(
                    text,
                    &d.serial,
                    format!("dbserver serial {} appears twice", d.serial.get_ref()),
                ));
            }
            if !names.insert(d.name.get_ref().clone()) {
                return Err(at(
                    text,
                    &d.name,
                    format!("dbserver name {:?} appears twice", d.name.get_ref()),
                ));
            }
            check_address(text, &d.address, "address")?;
            check_address(text, &d.mysql, "mysql")?;
        }
        let mut seen = BTreeSet::new();
        for c in &file.dbclient {
            if !seen.insert(*c.serial.get_ref()) {
                return Err(at(
                    text,
                    &c.serial,
                    format!("dbclient serial {} appears twice", c.serial.get_ref()),
                ));
            }
            check_address(text, &c.address, "address")?;
        }
        let primary_dc = &file.site.primary_dc;
        if !file.dbserver.iter().any(|d| &d.dc == primary_dc.get_ref()) {
            return Err(at(
                text,
                primary_dc,
                format!(
                    "primary_dc {:?} is the dc of no [[dbserver]]",
                    primary_dc.get_ref()
                ),
            ));
        }
        Ok(Site {
            primary_dc: primary_dc.get_ref().clone(),
            report_interval_s: positive(
                &file.site.report_interval_s,
                REPORT_INTERVAL_S,
                "report_interval_s",
            )?,
            resend_s: positive(&file.site.resend_s, RESEND_S, "resend_s")?,
            confirm_s: positive(&file.site.confirm_s, CONFIRM_S, "confirm_s")?,
            hold_s: positive(&file.site.hold_s, HOLD_S, "hold_s")?,
            write_backend: file.site.write_backend.clone(),
            read_backend: file.site.read_backend.clone(),
            arbitrators: file
                .arbitrator
                .iter()
                .map(|a| Arbitrator {
                    serial: *a.serial.get_ref(),
                    address: a.address.get_ref().clone(),
                })
                .collect(),
            dbservers: file
                .dbserver
                .iter()
                .map(|d| Dbserver {
                    serial: *d.serial.get_ref(),
                    name: d.name.get_ref().clone(),
                    dc: d.dc.clone(),
                    address: d.address.get_ref().clone(),
                    mysql: d.mysql.get_ref().clone(),
                })
                .collect(),
            dbclients: file
                .dbclient
                .iter()
                .map(|c| Dbclient {
                    serial: *c.serial.get_ref(),
                    address: c.address.get_ref().clone(),
                    haproxy_socket: c.haproxy_socket.clone(),
                })
                .collect(),
            text: text.to_string(),
        })
    }

    /// Each node's data centre, by name.
    pub fn dcs(&self) -> BTreeMap<String, String> {
        self.dbservers
            .iter()
            .map(|d| (d.name.clone(), d.dc.clone()))
            .collect()
    }

    pub fn dbserver(&self, serial: u32) -> Option<&Dbserver> {
        self.dbservers.iter().find(|d| d.serial == serial)
    }

    /// The node whose client address (`mysql`) is `address`.
    pub fn node_at(&self, address: &str) -> Option<&Dbserver> {
        self.dbservers.iter().find(|d| d.mysql == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"[site]
primary_dc = "dc1"
write_backend = "galera_write"
read_backend = "galera_read"

[[arbitrator]]
serial = 1
address = "203.0.113.10:4600"

[[dbserver]]
serial = 1
name = "n1"
dc = "dc1"
address = "192.0.2.11:4601"
mysql = "192.0.2.11:3306"

[[dbserver]]
serial = 2
name = "n2"
dc = "dc2"
address = "198.51.100.11:4601"
mysql = "198.51.100.11:3306"

[[dbclient]]
serial = 1
address = "203.0.113.10:4610"
haproxy_socket = "/run/haproxy/admin.sock"
"#;

    #[test]
    fn a_site_reads_with_its_defaults() {
        let s = Site::parse(EXAMPLE).unwrap();
        assert_eq!(s.primary_dc, "dc1");
        assert_eq!(
            (s.report_interval_s, s.resend_s, s.confirm_s, s.hold_s),
            (1, 3, 1, 30)
        );
        assert_eq!(s.dbservers.len(), 2);
        assert_eq!(s.node_at("198.51.100.11:3306").unwrap().name, "n2");
        assert_eq!(s.dcs()["n1"], "dc1");
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        let cases = [
            (
                EXAMPLE.replace("dc = \"dc2\"", "dc = \"dc2\"\ncolour = \"red\""),
                21,
                "unknown field",
            ),
            (
                EXAMPLE.replace("serial = 2", "serial = 1"),
                18,
                "dbserver serial 1 appears twice",
            ),
            (
                EXAMPLE.replace("name = \"n2\"", "name = \"n1\""),
                19,
                "dbserver name \"n1\" appears twice",
            ),
            (
                EXAMPLE.replace("primary_dc = \"dc1\"", "primary_dc = \"dc9\""),
                2,
                "primary_dc \"dc9\"",
            ),
            (
                EXAMPLE.replace("\"192.0.2.11:4601\"", "\"192.0.2.11\""),
                14,
                "is not host:port",
            ),
            (
                EXAMPLE.replace(
                    "read_backend = \"galera_read\"",
                    "read_backend = \"r\"\nhold_s = 0",
                ),
                5,
                "hold_s must be at least 1",
            ),
        ];
        for (text, line, needle) in cases {
            let e = Site::parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{needle}: {e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert!(Site::parse("[site]\nprimary_dc = \"x\"\n").is_err());
    }
}
