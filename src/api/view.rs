//! The status page, `GET /view`, and a job's page, `GET /view/NAME`: HTML
//! with its style inline, no script and no other asset, that reloads itself
//! every few seconds. The numbers are the ones `job_progress` and `get_lag`
//! answer (the same functions render them), and every text goes through
//! the same password filter as the JSON answers.
//!
//! Each value cell carries a `data-field` attribute (`lag_secs`,
//! `rows_copied`, …) so that a test, or a scraper, finds it without parsing
//! the layout.

use super::responses;
use crate::job::manager::JobSnapshot;
use crate::job::state::CheckState;
use crate::metrics::Metrics;
use serde_json::Value;
use std::fmt::Write;

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.running{color:#0a6b2d}.paused{color:#a11}.desynced{color:#777}.error{color:#a11;max-width:40em}\
pre{background:#f7f7f7;padding:1em;overflow:auto}";

/// HTML-escapes `text` (after masking passwords).
fn esc(text: &str) -> String {
    let text = crate::redact::text(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    )
}

fn cell(field: &str, value: &str, numeric: bool) -> String {
    format!(
        "<td data-field=\"{field}\"{}>{}</td>",
        if numeric { " class=\"num\"" } else { "" },
        esc(value)
    )
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes as an operator reads them.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// What an operator does about a stopped job.
fn what_to_do(job: &JobSnapshot) -> &'static str {
    let p = &job.progress;
    if job.lag().stalled() {
        "stalled: nothing applied while the source moves on; look at the destination \
         (locks, long transactions, load) and at job_status' last_retry_error"
    } else if p.failed_transaction.is_some() {
        "fix the destination and resume, skip the transaction (job_skip_binlog), or resync (force_fullsync)"
    } else if p.last_error.is_some() {
        "fix the cause the error names, then resume"
    } else {
        ""
    }
}

/// The page of every job.
/// A member of the group, as the status page lists it.
pub struct MemberLine {
    pub id: String,
    pub address: String,
    pub state: &'static str,
    pub learner: bool,
    pub jobs_owned: usize,
    pub leader: bool,
}

/// A job of the group that another member runs: its name, owner and the
/// owner's API address (None while it changes hands).
pub struct ElsewhereLine {
    pub name: String,
    pub owner: Option<(String, String)>,
}

/// The group around the jobs this member runs.
pub struct GroupLines<'a> {
    pub member_id: &'a str,
    pub members: Vec<MemberLine>,
    pub elsewhere: Vec<ElsewhereLine>,
}

pub fn status_page(
    jobs: &[JobSnapshot],
    group: &GroupLines<'_>,
    metrics: &Metrics,
    store: &str,
    address: &str,
) -> String {
    let mut html = head("ccr-syncer");
    let _ = write!(
        html,
        "<h1>ccr-syncer {}</h1><p>{} job(s); this page reloads every {REFRESH_SECS} s.</p>",
        esc(env!("CARGO_PKG_VERSION")),
        jobs.len()
    );
    html.push_str(
        "<h2>Jobs</h2><table><thead><tr><th>job</th><th>state</th><th>progress state</th>\
         <th>owner</th><th>lag (s)</th><th>lag (transactions)</th><th>full sync rows</th>\
         <th>full sync %</th><th>time left (s)</th><th>binlog headroom</th>\
         <th>last verification</th><th>last error</th><th>what to do</th></tr></thead><tbody>",
    );
    for job in jobs {
        let name = &job.spec.name;
        let lag = responses::lag(job);
        let progress = responses::progress(job);
        let full = &progress["full_sync"];
        let (rows, percent, eta) = if full.is_null() {
            ("—".to_string(), "—".to_string(), "—".to_string())
        } else {
            let copied = full["rows_copied"].as_u64().unwrap_or(0);
            let estimated = full["rows_estimated"].as_u64().unwrap_or(0);
            let percent = if estimated == 0 {
                100.0
            } else {
                (copied as f64 * 100.0 / estimated as f64).min(100.0)
            };
            (
                format!("{copied} / {estimated}"),
                format!("{percent:.1}"),
                text_of(&full["eta_secs"]),
            )
        };
        let headroom = match (
            metrics.job_gauge("ccr_syncer_binlog_retention_headroom_bytes", name),
            metrics.job_gauge("ccr_syncer_binlog_retention_headroom_seconds", name),
        ) {
            (Some(b), Some(s)) => format!("{} ({s} s)", bytes(b)),
            (Some(b), None) => bytes(b),
            _ => "—".into(),
        };
        let state = job.status.run_state.as_str();
        let stalled = if job.lag().stalled() {
            " <strong data-field=\"stalled\">(stalled)</strong>"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<tr data-job=\"{}\"><td data-field=\"name\"><a href=\"/view/{}\">{}</a></td>\
             <td data-field=\"state\" class=\"{state}\">{state}{stalled}</td>{}{}{}{}{}{}{}{}{}\
             <td data-field=\"last_error\" class=\"error\">{}</td>{}</tr>",
            esc(name),
            esc(name),
            esc(name),
            cell("progress_state", job.status.progress_state.as_str(), false),
            cell(
                "owner",
                &format!("this member ({})", job.fence.member),
                false,
            ),
            cell("lag_secs", &text_of(&lag["lag_secs"]), true),
            cell("lag", &text_of(&lag["lag"]), true),
            cell("rows_copied", &rows, true),
            cell("percent", &percent, true),
            cell("eta_secs", &eta, true),
            cell("headroom", &headroom, true),
            cell("verification", &verification(job), false),
            esc(job.progress.last_error.as_deref().unwrap_or("")),
            cell("what_to_do", what_to_do(job), false),
        );
    }
    for other in &group.elsewhere {
        let owner = match &other.owner {
            Some((id, address)) => format!(
                "<a href=\"{}/view/{}\">{}</a>",
                esc(address),
                esc(&other.name),
                esc(id)
            ),
            None => "changing hands".into(),
        };
        let _ = write!(
            html,
            "<tr><td data-field=\"job\">{}</td><td colspan=\"2\">runs on another member</td>\
             <td data-field=\"owner\">{owner}</td><td colspan=\"9\"></td></tr>",
            esc(&other.name)
        );
    }
    html.push_str("</tbody></table>");
    let _ = write!(
        html,
        "<h2>Members</h2><p>store: {}; this member: {} ({})</p><table><thead><tr><th>member</th>\
         <th>address</th><th>state</th><th>type</th><th>jobs</th><th>leader</th></tr></thead><tbody>",
        esc(store),
        esc(group.member_id),
        esc(address)
    );
    for m in &group.members {
        let _ = write!(
            html,
            "<tr><td data-field=\"member\">{}</td><td>{}</td><td data-field=\"member_state\">{}</td>\
             <td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&m.id),
            esc(&m.address),
            m.state,
            if m.learner { "learner" } else { "normal" },
            m.jobs_owned,
            if m.leader { "leader" } else { "" }
        );
    }
    html.push_str("</tbody></table></body></html>");
    html
}

/// The last verification in a few words: running (tables done of all),
/// or when it finished and whether every table was equal.
fn verification(job: &JobSnapshot) -> String {
    let Some(v) = job.progress.verify.as_ref() else {
        return "none yet".into();
    };
    let done = v
        .tables
        .iter()
        .filter(|t| t.state == CheckState::Done)
        .count();
    if v.state != CheckState::Done {
        return format!("running: {done} of {} tables", v.tables.len());
    }
    let differing: Vec<String> = v
        .tables
        .iter()
        .filter(|t| t.equal != Some(true))
        .map(|t| match t.equal {
            Some(false) => format!("{} ({} rows differ)", t.table, t.rows_different),
            _ => format!("{} (not compared)", t.table),
        })
        .collect();
    let at = v.finished_at.map(responses::time).unwrap_or_default();
    if differing.is_empty() {
        format!("equal ({} tables, {at})", v.tables.len())
    } else {
        format!("differences: {} ({at})", differing.join(", "))
    }
}

/// One job's page: the facts of the status page and its whole progress.
pub fn job_page(job: &JobSnapshot) -> String {
    let name = &job.spec.name;
    let mut html = head(&format!("ccr-syncer: {name}"));
    let progress = responses::progress(job);
    let detail = responses::detail(job);
    let lag = responses::lag(job);
    let _ = write!(
        html,
        "<p><a href=\"/view\">all jobs</a></p><h1>{}</h1><table><tbody>",
        esc(name)
    );
    for (label, field, value) in [
        ("state", "state", text_of(&progress["state"])),
        (
            "progress state",
            "progress_state",
            text_of(&progress["progress_state"]),
        ),
        ("source", "src", text_of(&detail["src"]["host"])),
        ("destination", "dest", text_of(&detail["dest"]["host"])),
        ("position", "position", text_of(&progress["position"])),
        ("commit seq", "commit_seq", text_of(&progress["commit_seq"])),
        ("lag (s)", "lag_secs", text_of(&lag["lag_secs"])),
        ("lag (transactions)", "lag", text_of(&lag["lag"])),
        ("last error", "last_error", text_of(&progress["last_error"])),
        ("what to do", "what_to_do", what_to_do(job).to_string()),
        ("last verification", "verification", verification(job)),
    ] {
        let _ = write!(
            html,
            "<tr><th>{}</th>{}</tr>",
            esc(label),
            cell(field, &value, false)
        );
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = write!(
        html,
        "</tbody></table><h2>job_progress</h2><pre>{}</pre><h2>job_detail</h2><pre>{}</pre></body></html>",
        esc(&pretty(&progress)),
        esc(&pretty(&detail))
    );
    html
}

/// Samples every job's lag (seconds) into `history` every 10 s, for the
/// status page's charts, until the task is aborted.
pub async fn sample_job_lag(
    manager: std::sync::Arc<crate::job::manager::JobManager>,
    history: std::sync::Arc<crate::history::History>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        let values: Vec<(String, f64)> = manager
            .list()
            .into_iter()
            .filter_map(|n| manager.snapshot(&n).ok())
            .map(|j| (j.spec.name.clone(), j.lag().secs as f64))
            .collect();
        history.sample(&values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_sizes() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
