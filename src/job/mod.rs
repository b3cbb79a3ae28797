//! Jobs: what they replicate (`spec`), the states they move through (`state`),
//! the task that runs each one (`runner`) and the manager that owns them all
//! (`manager`).

mod apply;
pub mod full_sync;
pub mod hold;
pub mod incremental;
pub mod lag;
pub mod manager;
mod runner;
pub mod spec;
pub mod state;
pub mod verify;

pub use manager::{JobError, JobManager, JobSnapshot};
pub use runner::{Switches, WorkSettings};
