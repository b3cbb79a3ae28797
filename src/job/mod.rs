//! Jobs: what they replicate (`spec`), the states they move through (`state`),
//! the task that runs each one (`runner`) and the manager that owns them all
//! (`manager`).

pub mod lag;
pub mod manager;
pub mod rules;
mod runner;
pub mod spec;
pub mod state;

pub use manager::{JobError, JobManager, JobSnapshot};
pub use runner::{Switches, WorkSettings};
