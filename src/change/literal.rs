//! SQL literals for values read from the source, so that the destination
//! stores exactly the bytes the source holds.
//!
//! Both sides' sessions run with `SET NAMES binary` and `time_zone='+00:00'`:
//! the source sends every value as the bytes of its text form without charset
//! conversion, and a quoted literal on the destination is a binary string
//! that a column of any character set stores as-is. So a value is written
//! either as its text unquoted (integers, DECIMAL, DOUBLE: digits the server
//! parses exactly; FLOAT is read as `CAST(… AS DOUBLE)`, whose text is exact,
//! because FLOAT's own text has only six digits) or as a quoted string with
//! the six bytes MySQL's lexer treats specially escaped.

/// How a column's values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralKind {
    /// Text the server parses as a number: written unquoted.
    Number,
    /// Everything else: a quoted, escaped binary string.
    Quoted,
}

impl LiteralKind {
    /// The kind for an `information_schema.COLUMNS.DATA_TYPE`.
    pub fn for_data_type(data_type: &str) -> Self {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
            | "numeric" | "float" | "double" | "real" => LiteralKind::Number,
            _ => LiteralKind::Quoted,
        }
    }
}

/// Appends `value` (None is SQL NULL) to `out` as a literal of `kind`.
pub fn push(out: &mut Vec<u8>, kind: LiteralKind, value: Option<&[u8]>) {
    match (value, kind) {
        (None, _) => out.extend_from_slice(b"NULL"),
        (Some(bytes), LiteralKind::Number) if is_number(bytes) => out.extend_from_slice(bytes),
        (Some(bytes), _) => push_quoted(out, bytes),
    }
}

/// Numeric text as servers print it; anything else (which a server never
/// sends for a numeric column) is quoted rather than trusted into the SQL.
fn is_number(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

pub fn push_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'\'');
    push_escaped(out, bytes, |b| match b {
        0 => Some(b"\\0"),
        b'\'' => Some(b"\\'"),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        0x1a => Some(b"\\Z"),
        _ => None,
    });
    out.push(b'\'');
}

/// Appends `bytes`, replacing each byte `escape` names by its escape
/// sequence and copying runs of the others at once.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], escape: impl Fn(u8) -> Option<&'static [u8]>) {
    out.reserve(bytes.len() + 2);
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(escaped) = escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escaped);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(kind: LiteralKind, value: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        push(&mut out, kind, value);
        out
    }

    #[test]
    fn literals() {
        use LiteralKind::*;
        type Case<'a> = (LiteralKind, Option<&'a [u8]>, &'a [u8]);
        let cases: &[Case] = &[
            (Number, None, b"NULL"),
            (Quoted, None, b"NULL"),
            (
                Number,
                Some(b"-9223372036854775808"),
                b"-9223372036854775808",
            ),
            (
                Number,
                Some(b"1.7976931348623157e308"),
                b"1.7976931348623157e308",
            ),
            (Number, Some(b"1; DROP"), b"'1; DROP'"),
            (Quoted, Some(b""), b"''"),
            (Quoted, Some(b"it's"), b"'it\\'s'"),
            (Quoted, Some(b"a\\b"), b"'a\\\\b'"),
            (Quoted, Some(b"\0\n\r\x1a"), b"'\\0\\n\\r\\Z'"),
            (Quoted, Some(b"\xff\xfe"), b"'\xff\xfe'"),
        ];
        for (kind, value, want) in cases {
            assert_eq!(
                lit(*kind, *value),
                want.to_vec(),
                "{kind:?} {:?}",
                value.map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(LiteralKind::for_data_type("BIGINT"), LiteralKind::Number);
        assert_eq!(LiteralKind::for_data_type("float"), LiteralKind::Number);
        for quoted in ["bit", "varchar", "json", "time", "enum", "year", "blob"] {
            assert_eq!(LiteralKind::for_data_type(quoted), LiteralKind::Quoted);
        }
    }
}
