//! Host mapping: private addresses a cluster reports → public addresses the
//! service can reach.
//!
//! A source or destination is always reached first at the `host:port` given in
//! the job spec. Addresses the service *discovers* (the primary a replica names,
//! the replicas a primary lists, a new primary after a failover) are the
//! cluster's private view; before connecting to one the service passes it
//! through [`HostMapping::translate`]. An update whose value is empty deletes
//! that entry (the Doris syncer's rule, kept for its users).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostMapping(BTreeMap<String, String>);

impl HostMapping {
    /// Builds a mapping from a request's entries: empty values are dropped,
    /// as they would be by an update.
    pub fn from_request(entries: BTreeMap<String, String>) -> Result<Self, String> {
        let mut mapping = HostMapping::default();
        mapping.update(entries)?;
        Ok(mapping)
    }

    /// Applies an update: a non-empty value sets the entry, an empty one
    /// deletes it. Keys and values are trimmed; an empty key is an error and
    /// leaves the mapping unchanged.
    pub fn update(&mut self, entries: BTreeMap<String, String>) -> Result<(), String> {
        let mut next = self.0.clone();
        for (private, public) in entries {
            let private = private.trim();
            let public = public.trim();
            if private.is_empty() {
                return Err("host_mapping has an empty private address".into());
            }
            if public.contains(char::is_whitespace) || private.contains(char::is_whitespace) {
                return Err(format!(
                    "host_mapping entry {private:?} -> {public:?} contains white space"
                ));
            }
            if public.is_empty() {
                next.remove(private);
            } else {
                next.insert(private.to_string(), public.to_string());
            }
        }
        self.0 = next;
        Ok(())
    }

    /// The public address for a discovered one. An address is either a bare
    /// host or `host:port`; a mapping of the whole `host:port` wins over one of
    /// the host alone, which keeps the discovered port.
    pub fn translate(&self, host: &str, port: u16) -> (String, u16) {
        if let Some(public) = self.0.get(&format!("{host}:{port}")) {
            return split_host_port(public, port);
        }
        match self.0.get(host) {
            Some(public) => split_host_port(public, port),
            None => (host.to_string(), port),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

fn split_host_port(address: &str, default_port: u16) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_string(), port),
            Err(_) => (address.to_string(), default_port),
        },
        _ => (address.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_value_deletes_and_others_set() {
        let mut m =
            HostMapping::from_request(map(&[("10.0.0.1", "1.2.3.4"), ("10.0.0.2", "")])).unwrap();
        assert_eq!(m.entries(), &map(&[("10.0.0.1", "1.2.3.4")]));
        m.update(map(&[("10.0.0.1", ""), ("10.0.0.3", "5.6.7.8")]))
            .unwrap();
        assert_eq!(m.entries(), &map(&[("10.0.0.3", "5.6.7.8")]));
    }

    #[test]
    fn bad_update_changes_nothing() {
        let mut m = HostMapping::from_request(map(&[("a", "b")])).unwrap();
        assert!(m.update(map(&[("c", "d"), (" ", "x")])).is_err());
        assert_eq!(m.entries(), &map(&[("a", "b")]));
    }

    #[test]
    fn translate_cases() {
        let m = HostMapping::from_request(map(&[
            ("10.0.0.1", "1.2.3.4"),
            ("10.0.0.2", "5.6.7.8:4000"),
            ("10.0.0.3:3307", "9.9.9.9:13307"),
        ]))
        .unwrap();
        let cases = [
            (("10.0.0.1", 3306), ("1.2.3.4", 3306)),
            (("10.0.0.2", 3306), ("5.6.7.8", 4000)),
            (("10.0.0.3", 3307), ("9.9.9.9", 13307)),
            (("10.0.0.3", 3306), ("10.0.0.3", 3306)),
            (("10.0.0.9", 3306), ("10.0.0.9", 3306)),
        ];
        for ((host, port), (want_host, want_port)) in cases {
            assert_eq!(
                m.translate(host, port),
                (want_host.to_string(), want_port),
                "{host}:{port}"
            );
        }
    }
}
