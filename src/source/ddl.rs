//! Statements the binlog carries as text: which are DDL, which tables they
//! name, and the rewriting that makes them act on the destination's names.
//!
//! This is not an SQL parser. A tokenizer that knows quoting and comments
//! finds the statement's kind and the table names in the places the DDL
//! grammar puts them (after `TABLE`, `ON`, `TO`, `LIKE`, `VIEW`, …); the
//! rewrite replaces exactly those name tokens, plus every `` `src_db`. ``
//! qualifier anywhere in the text, and leaves the rest byte for byte. What
//! it does not recognise is reported as [`Statement::Other`] with its first
//! word, so the caller decides (skip it, or stop on a DML statement a
//! non-ROW binlog would carry).

use crate::db::quote_ident;

/// How a statement's text reads, from its session's `sql_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dialect {
    /// `"x"` is a name, not a string.
    pub ansi_quotes: bool,
    /// A backslash in a string is a plain character.
    pub no_backslash_escapes: bool,
}

/// A table or view name as written: `db` is the qualifier, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub db: Option<String>,
    pub name: String,
    /// Byte range of the whole name (qualifier included) in the text.
    span: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdlKind {
    CreateTable,
    AlterTable,
    DropTable,
    RenameTable,
    TruncateTable,
    CreateIndex,
    DropIndex,
    CreateView,
    DropView,
    CreateSequence,
    AlterSequence,
    DropSequence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// DDL on tables or views. `names` are the objects it acts on, in order
    /// (RENAME: from, to, from, to …; ALTER … RENAME: the table, its new
    /// name); `refs` other tables it reads
    /// (`CREATE TABLE … LIKE t`).
    Ddl {
        kind: DdlKind,
        names: Vec<Name>,
        refs: Vec<Name>,
        temporary: bool,
    },
    Begin,
    Commit,
    Rollback,
    /// Anything else, by its first keyword(s), upper-cased.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str,
    Punct(u8),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn tokenize(sql: &str, dialect: Dialect) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Inside an executable comment (`/*! … */`, `/*M! … */`), whose text
    // the server reads as part of the statement; its `*/` is skipped.
    let mut executable = false;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'*' if executable && b.get(i + 1) == Some(&b'/') => {
                executable = false;
                i += 2;
            }
            b'/' if b.get(i + 1) == Some(&b'*')
                && (b.get(i + 2) == Some(&b'!')
                    || (b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!'))) =>
            {
                i += if b[i + 2] == b'!' { 3 } else { 4 };
                // The version it needs: every MariaDB this serves runs it.
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                executable = true;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            b'`' | b'"' if c == b'`' || dialect.ansi_quotes => {
                let name;
                (name, i) = quoted_name(sql, i);
                out.push(Token {
                    tok: Tok::Quoted(name),
                    start,
                    end: i,
                });
            }
            b'\'' | b'"' => {
                i = string_end(b, i, dialect);
                out.push(Token {
                    tok: Tok::Str,
                    start,
                    end: i,
                });
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(sql[start..i].to_string()),
                    start,
                    end: i,
                });
            }
            _ => {
                i += 1;
                out.push(Token {
                    tok: Tok::Punct(c),
                    start,
                    end: i,
                });
            }
        }
    }
    out
}

struct Cursor<'a> {
    toks: &'a [Token],
    at: usize,
}

impl Cursor<'_> {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.at).map(|t| &t.tok) {
            Some(Tok::Word(w)) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek_word().as_deref() == Some(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_all(&mut self, words: &[&str]) -> bool {
        let save = self.at;
        for w in words {
            if !self.eat(w) {
                self.at = save;
                return false;
            }
        }
        true
    }

    fn ident(&mut self) -> Option<(String, usize, usize)> {
        let t = self.toks.get(self.at)?;
        let s = match &t.tok {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.at += 1;
        Some((s, t.start, t.end))
    }

    fn punct(&mut self, p: u8) -> bool {
        if matches!(self.toks.get(self.at).map(|t| &t.tok), Some(Tok::Punct(c)) if *c == p) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// `name` or `db.name`.
    fn name(&mut self) -> Option<Name> {
        let (first, start, mut end) = self.ident()?;
        if self.punct(b'.') {
            let (second, _, e) = self.ident()?;
            end = e;
            return Some(Name {
                db: Some(first),
                name: second,
                span: (start, end),
            });
        }
        Some(Name {
            db: None,
            name: first,
            span: (start, end),
        })
    }

    /// Skips to just after the next top-level word `word`.
    fn skip_to(&mut self, word: &str) -> bool {
        let mut depth = 0i32;
        while let Some(t) = self.toks.get(self.at) {
            match &t.tok {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case(word) => {
                    self.at += 1;
                    return true;
                }
                _ => {}
            }
            self.at += 1;
        }
        false
    }
}

/// The name quoted from `sql[at]` (its quote doubled inside it stands for
/// itself), and where the token ends.
fn quoted_name(sql: &str, at: usize) -> (String, usize) {
    let b = sql.as_bytes();
    let quote = b[at];
    let mut name = String::new();
    let mut i = at + 1;
    let mut from = i;
    while i < b.len() {
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                name.push_str(&sql[from..=i]);
                i += 2;
                from = i;
                continue;
            }
            break;
        }
        i += 1;
    }
    name.push_str(&sql[from..i.min(b.len())]);
    (name, (i + 1).min(b.len()))
}

/// Where the string literal opened at `b[at]` ends.
fn string_end(b: &[u8], at: usize, dialect: Dialect) -> usize {
    let quote = b[at];
    let mut i = at + 1;
    while i < b.len() {
        if b[i] == b'\\' && !dialect.no_backslash_escapes {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            break;
        }
        i += 1;
    }
    (i + 1).min(b.len())
}

/// Classifies one statement of a QUERY event (of a session with the
/// default `sql_mode`).
pub fn parse(sql: &str) -> Statement {
    parse_in(sql, Dialect::default())
}

/// Classifies one statement as its session's `sql_mode` reads it.
pub fn parse_in(sql: &str, dialect: Dialect) -> Statement {
    let toks = tokenize(sql, dialect);
    let mut c = Cursor { toks: &toks, at: 0 };
    let first = c.peek_word().unwrap_or_default();
    match first.as_str() {
        "BEGIN" => Statement::Begin,
        "COMMIT" => Statement::Commit,
        "ROLLBACK" if toks.len() == 1 => Statement::Rollback,
        "START" if c.eat_all(&["START", "TRANSACTION"]) => Statement::Begin,
        "XA" => Statement::Other("XA".into()),
        "CREATE" => parse_create(&mut c),
        "ALTER" => parse_alter(&mut c),
        "DROP" => parse_drop(&mut c),
        "RENAME" => parse_rename(&mut c),
        "TRUNCATE" => {
            c.eat("TRUNCATE");
            c.eat("TABLE");
            match c.name() {
                Some(name) => ddl(DdlKind::TruncateTable, vec![name], vec![], false),
                None => Statement::Other(first),
            }
        }
        _ => Statement::Other(first),
    }
}

fn ddl(kind: DdlKind, names: Vec<Name>, refs: Vec<Name>, temporary: bool) -> Statement {
    Statement::Ddl {
        kind,
        names,
        refs,
        temporary,
    }
}

/// `CREATE …`: tables, sequences, indexes and views by name.
fn parse_create(c: &mut Cursor<'_>) -> Statement {
    c.eat("CREATE");
    c.eat_all(&["OR", "REPLACE"]);
    let temporary = c.eat("TEMPORARY");
    if c.eat("SEQUENCE") {
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        if let Some(name) = c.name() {
            return ddl(DdlKind::CreateSequence, vec![name], vec![], temporary);
        }
        return Statement::Other("CREATE SEQUENCE".into());
    }
    if c.eat("TABLE") {
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        let Some(name) = c.name() else {
            return Statement::Other("CREATE TABLE".into());
        };
        let mut refs = Vec::new();
        if c.eat("LIKE") || (c.punct(b'(') && c.eat("LIKE")) {
            refs.extend(c.name());
        }
        return ddl(DdlKind::CreateTable, vec![name], refs, temporary);
    }
    for w in ["UNIQUE", "FULLTEXT", "SPATIAL"] {
        c.eat(w);
    }
    if c.eat("INDEX") || c.eat("KEY") {
        if c.skip_to("ON") {
            if let Some(name) = c.name() {
                return ddl(DdlKind::CreateIndex, vec![name], vec![], false);
            }
        }
        return Statement::Other("CREATE INDEX".into());
    }
    if c.skip_to("VIEW") {
        c.eat_all(&["IF", "NOT", "EXISTS"]);
        if let Some(name) = c.name() {
            return ddl(DdlKind::CreateView, vec![name], vec![], false);
        }
    }
    Statement::Other(format!("CREATE {}", object_word(c.toks)))
}

/// `ALTER …`: a table (with the names it renames to or exchanges with), a
/// sequence or a view.
fn parse_alter(c: &mut Cursor<'_>) -> Statement {
    c.eat("ALTER");
    c.eat("ONLINE");
    c.eat("IGNORE");
    if c.eat("SEQUENCE") {
        c.eat_all(&["IF", "EXISTS"]);
        if let Some(name) = c.name() {
            return ddl(DdlKind::AlterSequence, vec![name], vec![], false);
        }
        return Statement::Other("ALTER SEQUENCE".into());
    }
    if c.eat("TABLE") {
        c.eat_all(&["IF", "EXISTS"]);
        let Some(name) = c.name() else {
            return Statement::Other("ALTER TABLE".into());
        };
        let mut names = vec![name];
        // `ALTER TABLE t … RENAME [TO|AS] u` renames the table itself.
        while c.skip_to("RENAME") {
            if matches!(c.peek_word().as_deref(), Some("COLUMN" | "INDEX" | "KEY")) {
                continue;
            }
            // `RENAME TO u`, `RENAME AS u` or `RENAME u`.
            let _ = c.eat("TO") || c.eat("AS");
            if let Some(to) = c.name() {
                names.push(to);
            }
        }
        // `EXCHANGE PARTITION p WITH TABLE u` moves rows from u:
        // both must be in scope.
        let mut x = Cursor {
            toks: c.toks,
            at: 0,
        };
        if x.skip_to("EXCHANGE") && x.skip_to("WITH") && x.eat("TABLE") {
            names.extend(x.name());
        }
        return ddl(DdlKind::AlterTable, names, vec![], false);
    }
    if c.skip_to("VIEW") {
        if let Some(name) = c.name() {
            return ddl(DdlKind::CreateView, vec![name], vec![], false);
        }
    }
    Statement::Other(format!("ALTER {}", object_word(c.toks)))
}

/// `DROP …` of tables, views, sequences or an index.
fn parse_drop(c: &mut Cursor<'_>) -> Statement {
    c.eat("DROP");
    let temporary = c.eat("TEMPORARY");
    let kind = if c.eat("TABLE") || c.eat("TABLES") {
        DdlKind::DropTable
    } else if c.eat("VIEW") {
        DdlKind::DropView
    } else if c.eat("SEQUENCE") {
        DdlKind::DropSequence
    } else if c.eat("INDEX") || c.eat("KEY") {
        c.eat_all(&["IF", "EXISTS"]);
        if c.skip_to("ON") {
            if let Some(name) = c.name() {
                return ddl(DdlKind::DropIndex, vec![name], vec![], false);
            }
        }
        return Statement::Other("DROP INDEX".into());
    } else {
        return Statement::Other(format!("DROP {}", object_word(c.toks)));
    };
    c.eat_all(&["IF", "EXISTS"]);
    let mut names = Vec::new();
    while let Some(n) = c.name() {
        names.push(n);
        if !c.punct(b',') {
            break;
        }
    }
    ddl(kind, names, vec![], temporary)
}

/// `RENAME TABLE a TO b, …`.
fn parse_rename(c: &mut Cursor<'_>) -> Statement {
    c.eat("RENAME");
    if !(c.eat("TABLE") || c.eat("TABLES")) {
        return Statement::Other(format!("RENAME {}", second_word(c.toks)));
    }
    c.eat_all(&["IF", "EXISTS"]);
    let mut names = Vec::new();
    while let Some(from) = c.name() {
        // `WAIT n` or `NOWAIT`: how long to wait for locks.
        if c.eat("WAIT") {
            c.ident();
        }
        c.eat("NOWAIT");
        if !c.eat("TO") {
            break;
        }
        let Some(to) = c.name() else { break };
        names.push(from);
        names.push(to);
        if !c.punct(b',') {
            break;
        }
    }
    ddl(DdlKind::RenameTable, names, vec![], false)
}

/// The kind of object a CREATE, ALTER or DROP that is not about tables
/// acts on (`CREATE OR REPLACE DEFINER=… TRIGGER` → `TRIGGER`), else the
/// statement's second word.
fn object_word(toks: &[Token]) -> String {
    const OBJECTS: [&str; 14] = [
        "TABLE",
        "INDEX",
        "VIEW",
        "SEQUENCE",
        "TRIGGER",
        "PROCEDURE",
        "FUNCTION",
        "EVENT",
        "USER",
        "ROLE",
        "DATABASE",
        "SCHEMA",
        "SERVER",
        "PACKAGE",
    ];
    toks.iter()
        .skip(1)
        .take(12)
        .find_map(|t| match &t.tok {
            Tok::Word(w) if OBJECTS.contains(&w.to_ascii_uppercase().as_str()) => {
                Some(w.to_ascii_uppercase())
            }
            _ => None,
        })
        .unwrap_or_else(|| second_word(toks))
}

fn second_word(toks: &[Token]) -> String {
    toks.iter()
        .skip(1)
        .find_map(|t| match &t.tok {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Whether a statement the binlog carries as text changes rows: in a ROW
/// binlog only DDL, transaction control and administrative statements are
/// text, so a DML statement means the source logs (some) statements.
pub fn is_dml(statement: &Statement) -> bool {
    matches!(statement, Statement::Other(w) if matches!(w.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD"))
}

/// Whether a statement that is not DDL on tables or views is known to
/// change nothing the job copies, wherever it acts: session and server
/// administration, privileges, table maintenance, savepoints, and the
/// objects the job does not copy (triggers — their rows are in the
/// binlog —, routines, events, users).
pub fn is_harmless(statement: &Statement) -> bool {
    let Statement::Other(what) = statement else {
        return false;
    };
    let mut words = what.split(' ');
    let first = words.next().unwrap_or_default();
    let object = words.next().unwrap_or_default();
    match first {
        "" | "SET" | "FLUSH" | "GRANT" | "REVOKE" | "ANALYZE" | "OPTIMIZE" | "REPAIR" | "CHECK"
        | "INSTALL" | "UNINSTALL" | "SAVEPOINT" | "RELEASE" | "ROLLBACK" | "XA" | "DO" => true,
        "CREATE" | "DROP" | "ALTER" => {
            matches!(
                object,
                "TRIGGER"
                    | "PROCEDURE"
                    | "FUNCTION"
                    | "EVENT"
                    | "USER"
                    | "ROLE"
                    | "SERVER"
                    | "PACKAGE"
            ) || (first == "CREATE" && matches!(object, "DATABASE" | "SCHEMA"))
        }
        "RENAME" => object == "USER",
        _ => false,
    }
}

/// Whether a statement names, anywhere (as a word or a quoted name,
/// outside strings and comments), something `is` accepts (a name as
/// written, or in any case).
pub fn mentions_as(sql: &str, dialect: Dialect, is: impl Fn(&str) -> bool) -> bool {
    tokenize(sql, dialect).iter().any(|t| match &t.tok {
        Tok::Word(w) | Tok::Quoted(w) => is(w),
        _ => false,
    })
}

/// Whether `words` appear in a row (case-insensitive, outside strings and
/// comments).
pub fn mentions_words(sql: &str, dialect: Dialect, words: &[&str]) -> bool {
    let toks = tokenize(sql, dialect);
    toks.windows(words.len()).any(|w| {
        w.iter()
            .zip(words)
            .all(|(t, want)| matches!(&t.tok, Tok::Word(x) if x.eq_ignore_ascii_case(want)))
    })
}

/// How names map from source to destination.
pub struct Rename<'a> {
    pub src_db: &'a str,
    pub dest_db: &'a str,
    /// For a table job: (source table, destination table).
    pub table: Option<(&'a str, &'a str)>,
    /// The source's `lower_case_table_names`: 0 names compare as written;
    /// 1 they are stored in lower case (and so created on the destination);
    /// 2 they are stored as written and compared in lower case.
    pub lower_case_table_names: u8,
}

impl Rename<'_> {
    /// Whether two names are one on the source.
    pub fn same(&self, a: &str, b: &str) -> bool {
        if self.lower_case_table_names == 0 {
            a == b
        } else {
            a.to_lowercase() == b.to_lowercase()
        }
    }

    /// The destination name of a source object, if it is in scope.
    pub fn map(&self, default_db: &str, name: &Name) -> Option<String> {
        let db = name.db.as_deref().unwrap_or(default_db);
        if !self.same(db, self.src_db) || name.name.starts_with("_ccr_syncer_") {
            return None;
        }
        match self.table {
            Some((src, dest)) if self.same(&name.name, src) => Some(dest.to_string()),
            Some(_) => None,
            None if self.lower_case_table_names == 1 => Some(name.name.to_lowercase()),
            None => Some(name.name.clone()),
        }
    }

    /// The statement with every in-scope name in `names`/`refs` replaced by
    /// its qualified destination name, every other `` `src_db`. `` qualifier
    /// pointed at the destination database, and a view's DEFINER dropped.
    pub fn rewrite(
        &self,
        sql: &str,
        dialect: Dialect,
        default_db: &str,
        names: &[&Name],
    ) -> String {
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for n in names {
            if let Some(dest) = self.map(default_db, n) {
                edits.push((
                    n.span.0,
                    n.span.1,
                    format!("{}.{}", quote_ident(self.dest_db), quote_ident(&dest)),
                ));
            }
        }
        let toks = tokenize(sql, dialect);
        for (i, t) in toks.iter().enumerate() {
            let inside = edits.iter().any(|(s, e, _)| t.start >= *s && t.end <= *e);
            if inside {
                continue;
            }
            let ident = match &t.tok {
                Tok::Word(w) | Tok::Quoted(w) => Some(w),
                _ => None,
            };
            let qualifier = ident.is_some_and(|w| self.same(w, self.src_db))
                && matches!(toks.get(i + 1).map(|n| &n.tok), Some(Tok::Punct(b'.')));
            if qualifier && self.src_db != self.dest_db {
                edits.push((t.start, t.end, quote_ident(self.dest_db)));
            }
            if matches!(&t.tok, Tok::Word(w) if w.eq_ignore_ascii_case("DEFINER"))
                && matches!(toks.get(i + 1).map(|n| &n.tok), Some(Tok::Punct(b'=')))
            {
                // DEFINER = user@host up to SQL SECURITY / VIEW / the object word.
                let end = toks[i..]
                    .iter()
                    .skip(2)
                    .find(|n| {
                        matches!(&n.tok, Tok::Word(w) if matches!(w.to_ascii_uppercase().as_str(),
                            "SQL" | "VIEW" | "TRIGGER" | "PROCEDURE" | "FUNCTION" | "EVENT"))
                    })
                    .map(|n| n.start);
                if let Some(end) = end {
                    edits.push((t.start, end, String::new()));
                }
            }
        }
        edits.sort_by_key(|e| e.0);
        let mut out = String::with_capacity(sql.len() + 32);
        let mut at = 0;
        for (s, e, text) in edits {
            if s < at {
                continue;
            }
            out.push_str(&sql[at..s]);
            out.push_str(&text);
            at = e;
        }
        out.push_str(&sql[at..]);
        out
    }
}

#[cfg(test)]
mod tests;
