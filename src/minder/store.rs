//! Where the site's configuration lives: a table of the cluster itself
//! (`minder_config` in the DSN's database, replicated by Galera to every
//! node), tried DSN by DSN, and each party's local copy in its state
//! directory, used when no DSN answers.

use super::site::Site;
use crate::db::{self, ServerAddr};
use crate::secret::Secret;
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use std::path::Path;
use std::time::Duration;

/// `mysql://USER[:PASSWORD]@HOST:PORT/DATABASE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    pub user: String,
    pub password: Secret,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl Dsn {
    pub fn parse(text: &str) -> Result<Dsn, String> {
        let bad = |why: &str| {
            format!(
                "DSN {}: {why} (mysql://USER[:PASSWORD]@HOST:PORT/DATABASE)",
                redact(text)
            )
        };
        let rest = text
            .strip_prefix("mysql://")
            .ok_or_else(|| bad("does not start with mysql://"))?;
        let (credentials, rest) = rest.rsplit_once('@').ok_or_else(|| bad("no USER@"))?;
        let (user, password) = match credentials.split_once(':') {
            Some((u, p)) => (u, p),
            None => (credentials, ""),
        };
        let (address, database) = rest.split_once('/').ok_or_else(|| bad("no /DATABASE"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
        let port = port.parse().map_err(|_| bad("PORT is not a number"))?;
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err(bad("USER, HOST and DATABASE are needed"));
        }
        Ok(Dsn {
            user: user.into(),
            password: Secret::new(password),
            host: host.into(),
            port,
            database: database.into(),
        })
    }

    /// A list, comma separated.
    pub fn parse_list(text: &str) -> Result<Vec<Dsn>, String> {
        let list: Vec<Dsn> = text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| Dsn::parse(s.trim()))
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err("--config-db names no DSN".into());
        }
        Ok(list)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The DSN list as it may be shown: passwords masked.
pub fn redact(text: &str) -> String {
    text.split(',')
        .map(|d| match (d.find("://"), d.rfind('@')) {
            (Some(s), Some(at)) if d[s + 3..at].contains(':') => {
                let colon = s + 3 + d[s + 3..at].find(':').expect("checked");
                format!("{}:******{}", &d[..colon], &d[at..])
            }
            _ => d.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

const TABLE: &str = "minder_config";
const TIMEOUT: Duration = Duration::from_secs(3);

async fn connect(dsn: &Dsn) -> Result<mysql_async::Conn, String> {
    let tls = TlsOptions::default();
    let addr = ServerAddr {
        host: &dsn.host,
        port: dsn.port,
        user: &dsn.user,
        password: &dsn.password,
        tls: &tls,
    };
    db::connect(&addr, None, TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

/// Stores `site` in the first DSN that answers (its database created when
/// missing); which one it was.
pub async fn load(dsns: &[Dsn], site: &Site) -> Result<String, String> {
    let mut errors = Vec::new();
    for dsn in dsns {
        let mut conn = match connect(dsn).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let db = db::quote_ident(&dsn.database);
        let result = async {
            conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await?;
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {db}.{TABLE} (id TINYINT PRIMARY KEY, \
                 document MEDIUMTEXT NOT NULL, updated_at BIGINT NOT NULL)"
            ))
            .await?;
            conn.exec_drop(
                format!("REPLACE INTO {db}.{TABLE} VALUES (1, ?, ?)"),
                (&site.text, chrono::Utc::now().timestamp_millis()),
            )
            .await
        }
        .await;
        let _ = conn.disconnect().await;
        match result {
            Ok(()) => return Ok(dsn.address()),
            Err(e) => errors.push(format!("{}: {e}", dsn.address())),
        }
    }
    Err(format!(
        "no DSN took the configuration: {}",
        errors.join("; ")
    ))
}

/// The stored document, from the first DSN that has one.
pub async fn fetch(dsns: &[Dsn]) -> Result<String, String> {
    let mut errors = Vec::new();
    for dsn in dsns {
        let mut conn = match connect(dsn).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let db = db::quote_ident(&dsn.database);
        let row: Result<Option<String>, _> = conn
            .query_first(format!("SELECT document FROM {db}.{TABLE} WHERE id = 1"))
            .await;
        let _ = conn.disconnect().await;
        match row {
            Ok(Some(text)) => return Ok(text),
            Ok(None) => errors.push(format!("{}: no configuration stored", dsn.address())),
            Err(e) => errors.push(format!("{}: {e}", dsn.address())),
        }
    }
    Err(format!(
        "no DSN has the configuration: {}",
        errors.join("; ")
    ))
}

/// Watches the stored configuration over one kept connection: every poll
/// reads the document's digest (a few bytes across the WAN) and the
/// document only when the digest changed. A connection that fails is
/// dropped and the next poll tries the DSNs again in order.
pub struct Watcher {
    dsns: Vec<Dsn>,
    conn: Option<(usize, mysql_async::Conn)>,
    digest: Option<String>,
}

impl Watcher {
    pub fn new(dsns: Vec<Dsn>) -> Watcher {
        Watcher {
            dsns,
            conn: None,
            digest: None,
        }
    }

    /// The digest of the document last read.
    pub fn digest(&self) -> Option<&String> {
        self.digest.as_ref()
    }

    /// The stored document when it changed since the last poll (the first
    /// poll always returns it); `None` when unchanged or when no DSN
    /// answers (the party goes on with what it has).
    pub async fn poll(&mut self) -> Option<String> {
        if self.conn.is_none() {
            for (i, dsn) in self.dsns.iter().enumerate() {
                if let Ok(c) = connect(dsn).await {
                    self.conn = Some((i, c));
                    break;
                }
            }
        }
        let (i, conn) = self.conn.as_mut()?;
        let db = db::quote_ident(&self.dsns[*i].database);
        let read = async {
            let digest: Option<String> = conn
                .query_first(format!(
                    "SELECT MD5(document) FROM {db}.{TABLE} WHERE id = 1"
                ))
                .await?;
            if digest.is_none() || digest == self.digest {
                return Ok::<_, mysql_async::Error>(None);
            }
            let text: Option<String> = conn
                .query_first(format!("SELECT document FROM {db}.{TABLE} WHERE id = 1"))
                .await?;
            Ok(text.map(|t| (digest, t)))
        };
        match tokio::time::timeout(TIMEOUT, read).await {
            Ok(Ok(Some((digest, text)))) => {
                self.digest = digest;
                Some(text)
            }
            Ok(Ok(None)) => None,
            _ => {
                self.conn = None;
                None
            }
        }
    }
}

/// Keeps the local copy in `state_dir` equal to `text`.
pub fn keep_copy(state_dir: &Path, text: &str) -> Result<(), String> {
    let copy = state_dir.join("site.toml");
    if std::fs::read_to_string(&copy).ok().as_deref() != Some(text) {
        let tmp = state_dir.join("site.toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &copy))
            .map_err(|e| format!("writing {}: {e}", copy.display()))?;
    }
    Ok(())
}

/// The site now: from the cluster (and then kept as the local copy), or the
/// local copy when no DSN answers.
pub async fn current(dsns: &[Dsn], state_dir: &Path) -> Result<Site, String> {
    let copy = state_dir.join("site.toml");
    match fetch(dsns).await {
        Ok(text) => {
            let site = Site::parse(&text).map_err(|e| format!("the stored configuration: {e}"))?;
            keep_copy(state_dir, &text)?;
            Ok(site)
        }
        Err(e) => {
            let text = std::fs::read_to_string(&copy)
                .map_err(|_| format!("{e}; and no local copy in {}", state_dir.display()))?;
            Site::parse(&text).map_err(|e| format!("the local copy {}: {e}", copy.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_read_and_hide_their_passwords() {
        let d = Dsn::parse("mysql://minder:s3cret@192.0.2.11:3306/site").unwrap();
        assert_eq!(
            (d.user.as_str(), d.port, d.database.as_str()),
            ("minder", 3306, "site")
        );
        assert_eq!(d.password.expose(), "s3cret");
        let list = Dsn::parse_list("mysql://u@h:1/d, mysql://u:p@h2:2/d").unwrap();
        assert_eq!(list.len(), 2);
        for bad in [
            "h:1/d",
            "mysql://h:1/d",
            "mysql://u@h/d",
            "mysql://u@h:x/d",
            "mysql://u@h:1",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
        let e = Dsn::parse("mysql://u:hidden@h/d").unwrap_err();
        assert!(!e.contains("hidden"), "{e}");
        assert_eq!(
            redact("mysql://u:pw@h:1/d,mysql://v@h:2/d"),
            "mysql://u:******@h:1/d,mysql://v@h:2/d"
        );
    }
}
