//! Stopping a job's stream for a moment at an exact source position: how a
//! verification (or a repair) sees the destination as of the same source
//! position as its source snapshot.
//!
//! First the verification asks the coordinator to *freeze*
//! ([`Holds::freeze`]): between two source transactions it stops taking new
//! ones, at some position S. Then the verification opens a snapshot on the
//! source, which names the binlog position P it sees; P is at or after S,
//! since the stream only reads what the source has committed. It hands P
//! over ([`Frozen::hold_at`]) and the coordinator goes on until everything
//! up to P is applied and nothing after it: its position reaches P, or the
//! next transaction read is not in P. It commits what it has built (at
//! least the checkpoint row), waits until every group in flight has
//! committed, and hands over a [`Held`] naming the position its checkpoint
//! row now holds; it applies nothing more until the `Held` is dropped. The
//! verification checks that this is P (a source that sent a transaction
//! before its snapshot could see it would make it later: it tries again). Meanwhile the verification opens a destination snapshot and
//! reads the checkpoint row *in that snapshot*: it must name the held
//! position, which proves the snapshot holds exactly the source
//! transactions up to P. A repair writes its rows while holding, so no
//! change after P reaches those rows before the source's rows as of P do.
//!
//! One request waits at a time (the job's one verification); the
//! coordinator of the moment serves it, so a request survives the stream
//! restarting after a transient error.

use crate::position::Position;
use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// The stream stopped at the position asked; it goes on when this is dropped.
#[derive(Debug)]
pub struct Held {
    /// The position the destination's checkpoint row holds now, as the
    /// coordinator wrote it.
    pub at: Position,
    _release: oneshot::Sender<()>,
}

impl Held {
    /// Whether the stream holds exactly at `at`: the same coordinate (the
    /// stream reads the server the snapshot was taken on), or the same
    /// GTIDs.
    pub fn is_at(&self, at: &Position) -> bool {
        if self.at.coord == at.coord {
            return true;
        }
        let g = &self.at.gtid;
        !g.is_empty()
            && !at.gtid.is_empty()
            && g.iter().all(|x| at.gtid.contains(x))
            && at.gtid.iter().all(|x| g.contains(x))
    }
}

/// A request posted for the coordinator.
pub(super) struct Request {
    frozen: oneshot::Sender<()>,
    at: oneshot::Receiver<Position>,
    reply: oneshot::Sender<Held>,
}

/// A request whose position is known: the coordinator goes on to it.
pub(super) struct Armed {
    pub at: Position,
    reply: oneshot::Sender<Held>,
}

impl Request {
    /// Tells the verification the stream is frozen, and waits for the
    /// position to go on to (`None`: the verification gave up).
    pub async fn frozen(self) -> Option<Armed> {
        self.frozen.send(()).ok()?;
        let at = tokio::time::timeout(FROZEN_AT_MOST, self.at)
            .await
            .ok()?
            .ok()?;
        Some(Armed {
            at,
            reply: self.reply,
        })
    }
}

impl Armed {
    /// Whether the verification still waits.
    pub fn wanted(&self) -> bool {
        !self.reply.is_closed()
    }

    /// Grants the hold at the checkpoint `at`; returns what resolves when
    /// the holder lets go (at once if it stopped waiting).
    pub fn grant(self, at: Position) -> oneshot::Receiver<()> {
        let (release, released) = oneshot::channel();
        let _ = self.reply.send(Held {
            at,
            _release: release,
        });
        released
    }
}

/// The longest the stream stays frozen waiting for the source snapshot's
/// position (opening it takes a round trip or two).
const FROZEN_AT_MOST: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("the job's stream did not stop for the verification within {0:?} (it is not streaming now: retrying, or copying a table again); trying again")]
    NotFrozen(Duration),
    #[error("the stream did not reach the verification's source position {at} within {waited:?} (the job is behind its source); trying again")]
    NotReached { at: String, waited: Duration },
}

/// The stream is frozen between two transactions; give it a position.
pub struct Frozen {
    at: oneshot::Sender<Position>,
    granted: oneshot::Receiver<Held>,
}

impl Frozen {
    /// Lets the stream go on to `at` and stop there; waits up to `wait`.
    pub async fn hold_at(self, at: Position, wait: Duration) -> Result<Held, HoldError> {
        let text = at.to_string();
        if self.at.send(at).is_err() {
            return Err(HoldError::NotFrozen(wait));
        }
        match tokio::time::timeout(wait, self.granted).await {
            Ok(Ok(held)) => Ok(held),
            _ => Err(HoldError::NotReached {
                at: text,
                waited: wait,
            }),
        }
    }
}

/// The job's one waiting hold request, shared by its verification and
/// whichever coordinator runs.
#[derive(Default)]
pub struct Holds {
    pending: Mutex<Option<Request>>,
    posted: Notify,
}

impl Holds {
    /// Asks the stream to stop taking transactions; waits up to `wait` for it.
    pub async fn freeze(&self, wait: Duration) -> Result<Frozen, HoldError> {
        let (frozen, is_frozen) = oneshot::channel();
        let (at_tx, at) = oneshot::channel();
        let (reply, granted) = oneshot::channel();
        *self.pending.lock() = Some(Request { frozen, at, reply });
        self.posted.notify_one();
        let result = tokio::time::timeout(wait, is_frozen).await;
        // Not taken in time: withdrawn.
        self.pending.lock().take();
        match result {
            Ok(Ok(())) => Ok(Frozen { at: at_tx, granted }),
            _ => Err(HoldError::NotFrozen(wait)),
        }
    }

    /// The request waiting, if any.
    pub(super) fn take(&self) -> Option<Request> {
        self.pending.lock().take()
    }

    /// Resolves when a request is posted (or was since the last call).
    pub(super) async fn posted(&self) {
        self.posted.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(gtid: &str, file: &str, pos: u64) -> Position {
        Position::new(gtid, file, pos).unwrap()
    }

    fn held(gtid: &str, file: &str, pos: u64) -> Held {
        let (release, _) = oneshot::channel();
        Held {
            at: at(gtid, file, pos),
            _release: release,
        }
    }

    #[test]
    fn held_exactly_at_the_snapshot() {
        let p = at("0-1-10,1-1-5", "b.000002", 900);
        assert!(held("0-1-10,1-1-5", "b.000002", 900).is_at(&p));
        // Another node's coordinates, the same transactions.
        assert!(held("1-1-5,0-1-10", "other.000007", 4).is_at(&p));
        assert!(!held("0-1-11,1-1-5", "b.000002", 950).is_at(&p));
        assert!(!held("0-1-10", "other.000007", 4).is_at(&p));
        assert!(!held("", "b.000002", 901).is_at(&at("", "b.000002", 900)));
    }

    #[tokio::test]
    async fn a_hold_goes_frozen_then_armed_then_granted() {
        let holds = std::sync::Arc::new(Holds::default());
        // Nobody serves it: not frozen.
        assert!(matches!(
            holds.freeze(Duration::from_millis(20)).await,
            Err(HoldError::NotFrozen(_))
        ));
        assert!(holds.take().is_none());
        let coordinator = {
            let holds = holds.clone();
            tokio::spawn(async move {
                holds.posted().await;
                let armed = holds.take().unwrap().frozen().await.unwrap();
                assert_eq!(armed.at.coord.pos, 900);
                assert!(armed.wanted());
                let released = armed.grant(at("0-1-10", "b.000002", 900));
                released.await.ok();
            })
        };
        let frozen = holds.freeze(Duration::from_secs(5)).await.unwrap();
        let h = frozen
            .hold_at(at("0-1-10", "b.000002", 900), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(h.is_at(&at("0-1-10", "b.000002", 900)));
        drop(h);
        coordinator.await.unwrap();
    }
}
