//! A cutover's fence on the shard a table leaves: three triggers that
//! refuse every insert, update and delete of the table there. It is put in
//! place, with what the cutover has decided (the target's position, the
//! verify result), before the first compute node switches, and lifted after
//! the last. A manager that dies in between leaves it: the compute nodes
//! not switched yet cannot write to the shard the table leaves (their
//! clients get an error naming the move), and the next manager finishes the
//! switch from what the fence holds ([`super::cutover::roll_forward`]).
//! Reads go on.
//!
//! The triggers are made and dropped outside the binlog (`sql_log_bin =
//! 0`): the move's stream does not see them, and the shard's replicas do not
//! have them (a failover of that shard in the middle of a cutover loses the
//! fence, not the switch).

use super::apply::{qualified, shard_conn};
use crate::cluster::kind::StepError;
use crate::cluster::nodes::sql_error;
use crate::cluster::Env;
use mysql_async::prelude::*;
use serde_json::Value;

/// The insert trigger holds the state; made last, dropped first, so that
/// it being there means the fence is whole.
const EVENTS: [(&str, &str); 3] = [("u", "UPDATE"), ("d", "DELETE"), ("i", "INSERT")];

/// Where the insert trigger's body keeps the cutover's state.
const STATE: &str = "SET @ccr_cutover = '";

/// A trigger's name: per database, from the table's name (FNV-1a), short
/// whatever the table's name is.
fn trigger(table: &str, event: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ccr_fence_{h:016x}_{event}")
}

/// A SQL string literal's body.
fn literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

/// The state back from the insert trigger's body.
fn state_of(body: &str) -> Option<Value> {
    let at = body.find(STATE)? + STATE.len();
    let rest = &body[at..];
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return serde_json::from_str(&out).ok(),
            c => out.push(c),
        }
    }
    None
}

async fn conn(
    env: &Env,
    cluster_id: &str,
    shard: i64,
) -> Result<(mysql_async::Conn, String), StepError> {
    let (mut conn, at) = shard_conn(env, cluster_id, shard).await?;
    conn.query_drop("SET SESSION sql_log_bin = 0, SESSION lock_wait_timeout = 2")
        .await
        .map_err(|e| sql_error(&at, &e))?;
    Ok((conn, at))
}

/// Puts the fence on `db.table` of `shard` (the table moving to shard
/// `to`), holding `state`.
pub async fn put(
    env: &Env,
    cluster_id: &str,
    shard: i64,
    db: &str,
    table: &str,
    to: i64,
    state: &Value,
) -> Result<(), StepError> {
    let (mut conn, at) = conn(env, cluster_id, shard).await?;
    let message = literal(&format!(
        "ccr-syncer: {db}.{table} is moving to shard {to}; write again"
    ));
    let work = async {
        for (event, verb) in EVENTS {
            let name = qualified(db, &trigger(table, event));
            let keep = if event == "i" {
                format!("{STATE}{}'; ", literal(&state.to_string()))
            } else {
                String::new()
            };
            // A leftover was lifted when the step started.
            conn.query_drop(format!(
                "CREATE TRIGGER {name} BEFORE {verb} ON {} FOR EACH ROW BEGIN {keep}\
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'; END",
                qualified(db, table)
            ))
            .await
            .map_err(|e| sql_error(&at, &e))?;
        }
        Ok(())
    };
    let r = work.await;
    let _ = conn.disconnect().await;
    r
}

/// What of a fence a table has.
pub enum Found {
    Nothing,
    /// What a fence being put or lifted when its manager died left.
    Part,
    /// The whole fence, with the state it keeps.
    Whole(Value),
}

/// What of a fence `db.table` of `shard` has.
pub async fn read(
    env: &Env,
    cluster_id: &str,
    shard: i64,
    db: &str,
    table: &str,
) -> Result<Found, StepError> {
    let (mut conn, at) = shard_conn(env, cluster_id, shard).await?;
    let names = EVENTS.map(|(event, _)| trigger(table, event));
    let found: Vec<(String, String)> = conn
        .exec(
            "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = ? AND TRIGGER_NAME IN (?, ?, ?)",
            (db, &names[0], &names[1], &names[2]),
        )
        .await
        .map_err(|e| sql_error(&at, &e))?;
    let _ = conn.disconnect().await;
    let whole = trigger(table, "i");
    match found.iter().find(|(name, _)| *name == whole) {
        Some((_, body)) => state_of(body).map(Found::Whole).ok_or_else(|| {
            StepError::definite(format!(
                "{at}: the cutover fence on {db}.{table} holds no state it can read"
            ))
        }),
        None if found.is_empty() => Ok(Found::Nothing),
        None => Ok(Found::Part),
    }
}

/// Lifts the fence (what of it is there) from `db.table` of `shard`.
pub async fn lift(
    env: &Env,
    cluster_id: &str,
    shard: i64,
    db: &str,
    table: &str,
) -> Result<(), StepError> {
    let (mut conn, at) = conn(env, cluster_id, shard).await?;
    let work = async {
        for (event, _) in EVENTS.iter().rev() {
            conn.query_drop(format!(
                "DROP TRIGGER IF EXISTS {}",
                qualified(db, &trigger(table, event))
            ))
            .await
            .map_err(|e| sql_error(&at, &e))?;
        }
        Ok(())
    };
    let r = work.await;
    let _ = conn.disconnect().await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_state_comes_back_from_the_trigger_body() {
        let state = json!({"target_at": {"file": "b.000001", "pos": 4, "gtid": "0-1-5"},
                           "verify": {"note": "it's \\ odd"}});
        let body = format!(
            "BEGIN {STATE}{}'; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'x'; END",
            literal(&state.to_string())
        );
        assert_eq!(state_of(&body), Some(state));
        assert_eq!(state_of("BEGIN SIGNAL SQLSTATE '45000'; END"), None);
    }

    #[test]
    fn trigger_names_are_short_and_per_table() {
        let long = "t".repeat(64);
        assert!(trigger(&long, "i").len() <= 64);
        assert_ne!(trigger("a", "i"), trigger("b", "i"));
        assert_ne!(trigger("a", "i"), trigger("a", "u"));
    }
}
