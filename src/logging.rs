//! Log set-up: `tracing` to standard error, or to `ccr_syncer.log` in the log
//! folder. Job events carry the job name as the `job` field. Passwords never
//! reach a log line: they are `Secret`s, which print as `******`.

use std::fs::OpenOptions;
use std::path::Path;
use tracing_subscriber::EnvFilter;

pub const LOG_FILE: &str = "ccr_syncer.log";

pub fn init(level: &str, dir: Option<&Path>) -> std::io::Result<()> {
    // Our own crate at the configured level; dependencies one step quieter.
    let filter = EnvFilter::new(format!("warn,ccr_syncer={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(LOG_FILE))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
