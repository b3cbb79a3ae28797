//! Typed reads of a JSON object's fields as the seeds' requests carry them:
//! strings, or numbers standing for strings (`"port": 6001` and
//! `"port": "6001"` read the same). Every refusal names the field (behind
//! `prefix`, e.g. `paras.`) and what was wrong; values are not trimmed
//! (a password keeps its spaces), numbers are.

use serde_json::{Map, Value};

pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

/// The JSON type of `v`, as refusals name it.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, prefix: &'a str) -> Fields<'a> {
        Fields { map, prefix }
    }

    /// The raw value of a field, if any.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!(
                "{}{key}: expected a string, got {}",
                self.prefix,
                kind(other)
            )),
        }
    }

    /// A value that is there and not blank.
    pub fn need(&self, key: &str) -> Result<String, String> {
        self.text(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| format!("{}{key} is missing", self.prefix))
    }

    /// A whole number in `min..=max`; absent or blank: none.
    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, String> {
        let Some(text) = self.text(key)?.filter(|t| !t.trim().is_empty()) else {
            return Ok(None);
        };
        let n: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}{key}: {text:?} is not a whole number", self.prefix))?;
        if n < min || n > max {
            return Err(format!(
                "{}{key}: {n} is out of range ({min} to {max})",
                self.prefix
            ));
        }
        Ok(Some(n))
    }

    pub fn need_int(&self, key: &str, min: i64, max: i64) -> Result<i64, String> {
        self.int(key, min, max)?
            .ok_or_else(|| format!("{}{key} is missing", self.prefix))
    }

    /// One of `allowed`.
    pub fn choice(&self, key: &str, allowed: &[&str]) -> Result<String, String> {
        let v = self.need(key)?;
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(format!(
                "{}{key}: {v:?} is not one of {}",
                self.prefix,
                allowed.join(", ")
            ))
        }
    }

    /// A list of strings (absent: empty).
    pub fn list(&self, key: &str) -> Result<Vec<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.trim().to_string()),
                    other => Err(format!(
                        "{}{key}: expected strings, got {}",
                        self.prefix,
                        kind(other)
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "{}{key}: expected a JSON array, got {}",
                self.prefix,
                kind(other)
            )),
        }
    }
}
