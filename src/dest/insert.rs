//! Multi-row INSERT statements built from source rows, each as large as
//! allowed but never larger than the destination accepts.

use crate::change::literal::{self, LiteralKind};
use crate::db::quote_ident;

pub struct InsertBuilder {
    prefix: Vec<u8>,
    kinds: Vec<LiteralKind>,
    limit: usize,
    buf: Vec<u8>,
}

impl InsertBuilder {
    /// Statements for `database.table (columns)`, flushed near `limit` bytes.
    pub fn new(
        database: &str,
        table: &str,
        columns: &[(String, LiteralKind)],
        limit: usize,
    ) -> Self {
        let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
        let prefix = format!(
            "INSERT INTO {}.{} ({}) VALUES ",
            quote_ident(database),
            quote_ident(table),
            names.join(", ")
        )
        .into_bytes();
        InsertBuilder {
            kinds: columns.iter().map(|(_, k)| *k).collect(),
            limit: limit.max(prefix.len() + 1),
            buf: Vec::new(),
            prefix,
        }
    }

    /// Adds a row; returns a full statement when this row filled the buffer.
    /// A single row larger than `limit` still goes out as its own statement
    /// (the destination's packet limit then decides, as it would for any client).
    pub fn push(&mut self, row: &[Option<Vec<u8>>]) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            self.buf.extend_from_slice(&self.prefix);
        } else {
            self.buf.push(b',');
        }
        self.buf.push(b'(');
        for (i, (value, kind)) in row.iter().zip(&self.kinds).enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            literal::push(&mut self.buf, *kind, value.as_deref());
        }
        self.buf.push(b')');
        (self.buf.len() >= self.limit)
            .then(|| self.take())
            .flatten()
    }

    /// The statement of the rows pushed since the last one, if any.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        let capacity = self.buf.capacity();
        Some(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(capacity),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_the_limit() {
        let cols = [
            ("id".to_string(), LiteralKind::Number),
            ("v".to_string(), LiteralKind::Quoted),
        ];
        let mut b = InsertBuilder::new("d", "t", &cols, 50);
        assert!(b.push(&[Some(b"1".to_vec()), None]).is_none());
        let sql = b.push(&[Some(b"2".to_vec()), Some(b"x".to_vec())]).unwrap();
        assert_eq!(
            String::from_utf8(sql).unwrap(),
            "INSERT INTO `d`.`t` (`id`, `v`) VALUES (1,NULL),(2,'x')"
        );
        assert!(b.take().is_none());
        assert!(b.push(&[Some(b"3".to_vec()), None]).is_none());
        assert_eq!(
            String::from_utf8(b.take().unwrap()).unwrap(),
            "INSERT INTO `d`.`t` (`id`, `v`) VALUES (3,NULL)"
        );
    }
}
