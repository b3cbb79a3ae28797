//! The minders' language (seed 004): every message is
//! `{"sender", "receiver", "verb", "params", "msg_id"}`, sent as
//! `POST /minder` to the receiver's address, and states the current state,
//! never a change — so any message may be lost, repeated or reordered: a
//! receiver ignores one older than the last it took from the same sender.
//! The HTTP answer is the acknowledgement (`ack`) or the reply; a verb that
//! needs one is sent again every `resend_s` until it comes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Dbserver,
    Arbitrator,
    Dbclient,
    /// A person's `minder command`.
    Command,
    /// Galera's `wsrep_notify_cmd`, beside its dbserver.
    Notify,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dbserver => "dbserver",
            Kind::Arbitrator => "arbitrator",
            Kind::Dbclient => "dbclient",
            Kind::Command => "command",
            Kind::Notify => "notify",
        }
    }
}

/// A party: `type:serial` (`dbserver:2`, `arbitrator:1`, `command:0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Party {
    pub kind: Kind,
    pub serial: u32,
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.serial)
    }
}

impl FromStr for Party {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, serial) = s
            .split_once(':')
            .ok_or_else(|| format!("party {s:?} is not type:serial"))?;
        let kind = match kind {
            "dbserver" => Kind::Dbserver,
            "arbitrator" => Kind::Arbitrator,
            "dbclient" => Kind::Dbclient,
            "command" => Kind::Command,
            "notify" => Kind::Notify,
            other => {
                return Err(format!(
                    "party type {other:?} is not one of dbserver, arbitrator, dbclient, command, notify"
                ))
            }
        };
        let serial = serial
            .parse()
            .map_err(|_| format!("party {s:?}: serial {serial:?} is not a number"))?;
        Ok(Party { kind, serial })
    }
}

impl Serialize for Party {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Party {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every verb of the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Ack,
    /// A node's state (dbserver → arbitrator, dbclients).
    DbStatusReport,
    /// "Send a status report now."
    RequestStatus,
    /// Make this node's component Primary (arbitrator → dbserver).
    SetPrimary,
    /// The arbitrator's view (→ dbclients; a command asks for it).
    StatusSummary,
    Drain,
    Undrain,
    SetWriter,
    ForcePrimary,
    /// Galera's notification, handed to the local dbserver.
    Notify,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Ack => "ack",
            Verb::DbStatusReport => "db_status_report",
            Verb::RequestStatus => "request_status",
            Verb::SetPrimary => "set_primary",
            Verb::StatusSummary => "status_summary",
            Verb::Drain => "drain",
            Verb::Undrain => "undrain",
            Verb::SetWriter => "set_writer",
            Verb::ForcePrimary => "force_primary",
            Verb::Notify => "notify",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub sender: Party,
    pub receiver: Party,
    pub verb: Verb,
    #[serde(default)]
    pub params: Value,
    pub msg_id: u64,
}

/// Why a message is refused (a 4xx, nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Message {
    /// Parses a body: malformed JSON, a missing or wrong field, an unknown
    /// verb or party type are refused saying which.
    pub fn parse(body: &[u8]) -> Result<Message, Refused> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Refused(if path == "." || path == "?" || path.is_empty() {
                format!("not a minder message: {inner}")
            } else {
                format!("{path}: {inner}")
            })
        })
    }

    /// The acknowledgement of this message.
    pub fn ack(&self, from: Party) -> Message {
        Message {
            sender: from,
            receiver: self.sender,
            verb: Verb::Ack,
            params: serde_json::json!({"msg_id": self.msg_id}),
            msg_id: next_id(),
        }
    }
}

/// Message ids: increasing across restarts of a party (milliseconds since
/// the epoch × 1000 plus a counter), so a restarted sender is not ignored.
pub fn next_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = (chrono::Utc::now().timestamp_millis().max(0) as u64) * 1000;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Remembers the newest message id taken from each sender.
#[derive(Debug, Default)]
pub struct Seen(std::collections::HashMap<Party, u64>);

impl Seen {
    /// Whether `m` is newer than every message taken from its sender.
    pub fn is_newer(&self, m: &Message) -> bool {
        self.0.get(&m.sender).is_none_or(|last| m.msg_id > *last)
    }

    /// Records message `id` of `sender` as taken.
    pub fn taken(&mut self, sender: Party, id: u64) {
        let last = self.0.entry(sender).or_insert(0);
        *last = (*last).max(id);
    }

    /// Takes `m` if it is newer: whether it was.
    pub fn take(&mut self, m: &Message) -> bool {
        let newer = self.is_newer(m);
        if newer {
            self.taken(m.sender, m.msg_id);
        }
        newer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parties_and_messages_read_and_refuse() {
        let p: Party = "dbserver:2".parse().unwrap();
        assert_eq!(p.to_string(), "dbserver:2");
        assert!("server:1"
            .parse::<Party>()
            .unwrap_err()
            .contains("not one of"));
        assert!("dbserver:x".parse::<Party>().is_err());
        let m = Message::parse(
            br#"{"sender":"dbserver:2","receiver":"arbitrator:1","verb":"db_status_report","params":{},"msg_id":7}"#,
        )
        .unwrap();
        assert_eq!(m.verb, Verb::DbStatusReport);
        for (body, needle) in [
            (&b"{"[..], "not a minder message"),
            (br#"{"sender":"dbserver:2","receiver":"arbitrator:1","verb":"explode","msg_id":1}"#, "verb"),
            (br#"{"sender":"dbserver:2","receiver":"arbitrator:1","verb":"ack"}"#, "msg_id"),
            (br#"{"sender":"db:2","receiver":"arbitrator:1","verb":"ack","msg_id":1}"#, "sender"),
            (br#"{"sender":"dbserver:2","receiver":"arbitrator:1","verb":"ack","msg_id":1,"x":1}"#, "unknown field"),
        ] {
            let e = Message::parse(body).unwrap_err();
            assert!(e.0.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn older_and_repeated_messages_are_ignored() {
        let mut seen = Seen::default();
        let m = |id| Message {
            sender: "dbserver:1".parse().unwrap(),
            receiver: "arbitrator:1".parse().unwrap(),
            verb: Verb::DbStatusReport,
            params: Value::Null,
            msg_id: id,
        };
        assert!(seen.take(&m(5)));
        assert!(!seen.take(&m(5)));
        assert!(!seen.take(&m(4)));
        assert!(seen.take(&m(6)));
        let (a, b) = (next_id(), next_id());
        assert!(b > a);
    }
}
