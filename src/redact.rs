//! Passwords out of text the service shows: log lines (every one, at any
//! level, through the log writer), API answers and quoted statements.
//!
//! Two passes, both cheap and without a parser:
//! - [`statement`] masks the string literal that follows the words that
//!   introduce a password in MySQL and MariaDB statements: `IDENTIFIED BY
//!   '…'` (and `BY PASSWORD '…'`), `IDENTIFIED VIA|WITH plugin USING|AS '…'`
//!   and `USING PASSWORD('…')`, `PASSWORD('…')`, `PASSWORD = '…'`, `SET
//!   PASSWORD [FOR user] = '…'`, `MASTER_PASSWORD = '…'`. The literal keeps
//!   its quotes and becomes `******`.
//! - [`text`] does that and also masks every password the process knows: each
//!   [`crate::secret::Secret`] made is remembered here, so a server's error
//!   message or a URL that quotes a job's own password shows `******`.
//!   Passwords shorter than [`MIN_REMEMBERED`] bytes are not searched for
//!   (they would mask ordinary words); the statement pass still covers them.
//!
//! Redaction is for what is shown only: statements applied to the
//! destination are never changed by it.

use crate::secret::MASK;
use parking_lot::RwLock;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Shortest password [`text`] searches for.
pub const MIN_REMEMBERED: usize = 6;
/// Passwords remembered at most (a bound on memory and on the cost of a
/// log line; a job has two).
const MAX_REMEMBERED: usize = 4096;

static KNOWN: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Remembers a password so that [`text`] masks it.
pub fn remember(secret: &str) {
    if secret.len() < MIN_REMEMBERED {
        return;
    }
    if KNOWN.read().contains(secret) {
        return;
    }
    let mut known = KNOWN.write();
    if known.len() < MAX_REMEMBERED {
        known.insert(secret.to_string());
    }
}

/// `s` with statement passwords, URL passwords (`scheme://user:pw@host`)
/// and every known password masked.
pub fn text(s: &str) -> Cow<'_, str> {
    let masked = match statement(s) {
        Cow::Borrowed(b) => url_passwords(b),
        Cow::Owned(o) => Cow::Owned(url_passwords(&o).into_owned()),
    };
    let known = KNOWN.read();
    if !known.iter().any(|k| masked.contains(k.as_str())) {
        return masked;
    }
    let mut out = masked.into_owned();
    // Longest first, so a password that contains another is masked whole.
    let mut secrets: Vec<&String> = known.iter().collect();
    secrets.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// `s` with the password of every `scheme://user:password@` masked.
fn url_passwords(s: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut at = 0;
    let mut search = 0;
    while let Some(found) = s[search..].find("://") {
        let start = search + found + 3;
        let rest = &s[start..];
        let end = rest
            .find(|c: char| c == '/' || c == '@' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        search = start;
        if rest[end..].starts_with('@') {
            if let Some(colon) = rest[..end].find(':') {
                out.push_str(&s[at..start + colon + 1]);
                out.push_str(MASK);
                at = start + end;
                search = at;
            }
        }
    }
    if at == 0 {
        return Cow::Borrowed(s);
    }
    out.push_str(&s[at..]);
    Cow::Owned(out)
}

/// `sql` with the string literals that hold passwords masked.
pub fn statement(sql: &str) -> Cow<'_, str> {
    let spans = password_literals(sql);
    if spans.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (start, end) in spans {
        // Keep the opening and closing quotes.
        out.push_str(&sql[at..=start]);
        out.push_str(MASK);
        at = end.min(sql.len());
    }
    out.push_str(&sql[at..]);
    Cow::Owned(out)
}

/// Byte ranges `(opening quote, closing quote)` of the literals to mask.
fn password_literals(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut spans = Vec::new();
    // Tokens left in which a literal is a password (0: none).
    let mut armed: u8 = 0;
    let mut identified = false;
    let mut previous = String::new();
    let mut set_password_for = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                // An unclosed literal runs to the end (and is masked whole).
                let end = literal_end(bytes, i).unwrap_or(bytes.len());
                if armed > 0 {
                    spans.push((i, end));
                }
                armed = 0;
                i = end + 1;
                continue;
            }
            b'=' if set_password_for => {
                armed = 3;
                set_password_for = false;
            }
            b'(' | b')' | b',' => {}
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'@' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'@')
                {
                    i += 1;
                }
                let word = sql[start..i].to_ascii_uppercase();
                match word.as_str() {
                    "IDENTIFIED" => {
                        identified = true;
                        armed = 0;
                    }
                    "BY" if identified => armed = 2,
                    "USING" | "AS" if identified => armed = 3,
                    // CONNECTION='mysql://user:pw@host/…' (FEDERATED).
                    "PASSWORD" | "MASTER_PASSWORD" | "CONNECTION" => armed = 2,
                    "FOR" if previous == "PASSWORD" => {
                        set_password_for = true;
                        armed = 0;
                    }
                    _ => armed = armed.saturating_sub(1),
                }
                previous = word;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    spans
}

/// Index of the quote that closes the literal opened at `open` (doubled
/// quotes and backslash escapes stay inside); `None` if it is not closed.
fn literal_end(bytes: &[u8], open: usize) -> Option<usize> {
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_with_passwords() {
        let cases = [
            (
                "create user u2@'%' identified by 'TopSecret1'",
                "create user u2@'%' identified by '******'",
            ),
            (
                "CREATE USER 'a'@'h' IDENTIFIED BY PASSWORD '*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29'",
                "CREATE USER 'a'@'h' IDENTIFIED BY PASSWORD '******'",
            ),
            (
                "ALTER USER u IDENTIFIED BY \"dq'pw\"",
                "ALTER USER u IDENTIFIED BY \"******\"",
            ),
            (
                "GRANT SELECT ON *.* TO u@'%' IDENTIFIED BY 'it''s secret'",
                "GRANT SELECT ON *.* TO u@'%' IDENTIFIED BY '******'",
            ),
            (
                "CREATE USER e IDENTIFIED VIA ed25519 USING PASSWORD('Ed-Secret1')",
                "CREATE USER e IDENTIFIED VIA ed25519 USING PASSWORD('******')",
            ),
            (
                "CREATE USER e IDENTIFIED VIA ed25519 USING 'ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY'",
                "CREATE USER e IDENTIFIED VIA ed25519 USING '******'",
            ),
            (
                "CREATE USER m IDENTIFIED WITH caching_sha2_password BY 'x1'",
                "CREATE USER m IDENTIFIED WITH caching_sha2_password BY '******'",
            ),
            (
                "CREATE USER m IDENTIFIED WITH mysql_native_password AS '*AB'",
                "CREATE USER m IDENTIFIED WITH mysql_native_password AS '******'",
            ),
            (
                "SET PASSWORD = PASSWORD('new pw')",
                "SET PASSWORD = PASSWORD('******')",
            ),
            (
                "SET PASSWORD FOR 'bob'@'%' = 'plainpw'",
                "SET PASSWORD FOR 'bob'@'%' = '******'",
            ),
            (
                "set password for bob@localhost = password('pw2')",
                "set password for bob@localhost = password('******')",
            ),
            (
                "CHANGE MASTER TO MASTER_HOST='10.0.0.1', MASTER_USER='r', MASTER_PASSWORD='ReplPw', MASTER_PORT=3306",
                "CHANGE MASTER TO MASTER_HOST='10.0.0.1', MASTER_USER='r', MASTER_PASSWORD='******', MASTER_PORT=3306",
            ),
            (
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'u', PASSWORD 'srvpw')",
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'u', PASSWORD '******')",
            ),
            (
                "SELECT PASSWORD('abc')",
                "SELECT PASSWORD('******')",
            ),
            (
                "ALTER USER u IDENTIFIED BY 'cut off",
                "ALTER USER u IDENTIFIED BY '******",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(statement(sql), want, "{sql}");
        }
    }

    #[test]
    fn other_statements_are_unchanged() {
        for sql in [
            "INSERT INTO t VALUES (1, 'identified by')",
            "CREATE INDEX i USING BTREE ON t (a)",
            "CREATE TABLE t (a INT, b VARCHAR(5) DEFAULT 'x')",
            "UPDATE t SET password_hash = 'h' WHERE id = 1",
            "ALTER TABLE t ADD COLUMN c INT",
            "SELECT 'unterminated",
        ] {
            assert_eq!(statement(sql), sql);
        }
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            text("dsn mysql://u:pw1@h:3306/db and http://h/x@y"),
            "dsn mysql://u:******@h:3306/db and http://h/x@y"
        );
        assert_eq!(
            statement("CREATE TABLE f (a INT) ENGINE=FEDERATED CONNECTION='mysql://u:p@h/d/t'"),
            "CREATE TABLE f (a INT) ENGINE=FEDERATED CONNECTION='******'"
        );
    }

    #[test]
    fn known_passwords_are_masked_anywhere() {
        remember("Redact-Me-123");
        remember("abcde"); // too short to search for
        assert_eq!(
            text("Access denied using Redact-Me-123 and abcde"),
            "Access denied using ****** and abcde"
        );
        assert_eq!(text("nothing here"), "nothing here");
    }
}
