//! The status page in a real browser: headless Chromium (Debian's
//! `chromium`) loads `/view`, which shows a running job's numbers as
//! `job_progress` and `get_lag` answer them, and renders it to a PNG.

use crate::harness::*;
use crate::incremental::wait_caught_up;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

pub(crate) fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("chromium not found: the status page is tested in a real browser (apt-get install chromium)")
        })
}

/// Chromium headless, as the machine allows it (no sandbox as root, no
/// network beyond the page).
pub(crate) fn browser(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// The text of the cell `field` in the row of job `name` of a dumped DOM.
fn field(dom: &str, name: &str, field: &str) -> String {
    let row_start = dom
        .find(&format!("data-job=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{dom}"));
    let row = &dom[row_start
        ..dom[row_start..]
            .find("</tr>")
            .map_or(dom.len(), |e| row_start + e)];
    let at = row
        .find(&format!("data-field=\"{field}\""))
        .unwrap_or_else(|| panic!("no {field} in row {row}"));
    let open = row[at..].find('>').expect("cell opens") + at + 1;
    let close = row[open..].find("</td>").expect("cell closes") + open;
    // Strip an inner link.
    let inner = &row[open..close];
    let text = match (inner.find('>'), inner.rfind("</")) {
        (Some(a), Some(b)) if inner.starts_with('<') => &inner[a + 1..b],
        _ => inner,
    };
    text.trim().to_string()
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_browser_shows_the_jobs_numbers() {
    let db = table_t(source(), "view", 500);
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "viewed", "src": src_endpoint(source(), &db, Some("t")),
                   "dest": dest_endpoint(dest(), &unique("view_copy"), Some("t"))}),
        )
        .await
        .ok();
    wait_for_state(&service, "viewed", "TableIncrementalSync").await;
    source().admin(&format!("UPDATE {db}.t SET v = v + 1 WHERE id <= 10"));
    wait_caught_up(&service, "viewed", source()).await;
    service.post("verify", json!({"name": "viewed"})).await.ok();
    poll_job(
        &service,
        "job_progress",
        "viewed",
        60,
        "verification done",
        |p| p["verify"]["state"] == "done",
    )
    .await;
    let progress = service
        .post("job_progress", json!({"name": "viewed"}))
        .await
        .ok()["job_progress"]
        .clone();
    // The page read between two equal get_lag answers: other tests' writes
    // on the shared source move its head meanwhile.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/view", service.addr);
    let get_lag = || async {
        let v = service
            .post("get_lag", json!({"name": "viewed"}))
            .await
            .ok();
        (v["lag"].clone(), v["lag_secs"].clone(), v)
    };
    let (lag, out) = {
        let mut tries = 0;
        loop {
            let (l1, s1, lag) = get_lag().await;
            let out = browser(profile.path(), &["--dump-dom", &url]);
            let (l2, s2, _) = get_lag().await;
            tries += 1;
            if (l1 == l2 && s1 == s2) || tries == 5 {
                break (lag, out);
            }
        }
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<h1>ccr-syncer"),
        "the page did not load: {}{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("http-equiv=\"refresh\""), "it reloads itself");
    assert!(!dom.contains("<script"), "no script");
    assert_eq!(field(&dom, "viewed", "state"), shown(&progress["state"]));
    assert_eq!(
        field(&dom, "viewed", "progress_state"),
        shown(&progress["progress_state"])
    );
    assert_eq!(field(&dom, "viewed", "lag"), shown(&lag["lag"]));
    assert_eq!(field(&dom, "viewed", "lag_secs"), shown(&lag["lag_secs"]));
    let full = &progress["full_sync"];
    assert_eq!(
        field(&dom, "viewed", "rows_copied"),
        format!("{} / {}", full["rows_copied"], full["rows_estimated"])
    );
    assert_eq!(field(&dom, "viewed", "rows_copied"), "500 / 500");
    assert_eq!(field(&dom, "viewed", "percent"), "100.0");
    let verification = field(&dom, "viewed", "verification");
    assert!(
        verification.starts_with("equal (1 tables, ")
            && verification.contains(&shown(&progress["verify"]["finished_at"])),
        "{verification}"
    );
    assert!(
        dom.contains("href=\"/view/viewed\""),
        "a link to the job's page"
    );

    // The job's page, and a picture of the status page.
    let job = browser(profile.path(), &["--dump-dom", &format!("{url}/viewed")]);
    let job = String::from_utf8_lossy(&job.stdout);
    assert!(
        job.contains("job_progress") && job.contains("TableIncrementalSync"),
        "{job}"
    );
    let png = profile.path().join("view.png");
    let shot = browser(
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,420",
            &url,
        ],
    );
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&shot.stderr)));
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(keep) = std::env::var("CCR_VIEW_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    // Other methods and unknown jobs are refused as elsewhere.
    service.post("view", json!({})).await.fails(405, "GET");
    let missing = service.get("view/nosuch").await;
    missing.fails(404, "nosuch");
    service.stop().await;
}
