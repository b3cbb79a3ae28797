//! Log set-up: `tracing` to standard error, or to `ccr_syncer.log` in the log
//! folder (created 0600). Job events carry the job name as the `job` field.
//! Passwords never reach a log line: they are `Secret`s, which print as
//! `******`, and every line passes through [`crate::redact::text`] on its way
//! out, which masks quoted statements' passwords and every known password
//! (a server's error that quotes one included).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tracing_subscriber::fmt::MakeWriter;
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
                .mode(0o600)
                .open(dir.join(LOG_FILE))?;
            builder
                .with_ansi(false)
                .with_writer(Redacting(std::sync::Mutex::new(file)))
                .init();
        }
        None => builder
            .with_writer(Redacting(std::io::stderr as fn() -> std::io::Stderr))
            .init(),
    }
    Ok(())
}

/// Writes each formatted event redacted. The formatter hands over a whole
/// event in one `write`, so a password is never split between two calls.
struct Redacting<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(crate::redact::text(&text).as_bytes())
            .map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
