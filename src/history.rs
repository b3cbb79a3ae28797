//! Values over the last hour, per name, one sample every 10 s: what the
//! status page draws as small inline SVG charts (each replica's lag, each
//! CCR job's lag), because people would rather look than read.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Samples kept per name: an hour, one every 10 s.
const KEEP: usize = 360;
const EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct History {
    series: Mutex<HashMap<String, VecDeque<(i64, f64)>>>,
    last: Mutex<Option<Instant>>,
}

impl History {
    /// Adds one sample a name, at most once every 10 s (sooner calls are
    /// dropped). A name not sampled for an hour is forgotten.
    pub fn sample(&self, values: &[(String, f64)]) {
        if values.is_empty() {
            return;
        }
        let mut last = self.last.lock();
        // A second's slack: a caller's own 10 s tick may come early.
        if last.is_some_and(|t| t.elapsed() + Duration::from_secs(1) < EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let now = chrono::Utc::now().timestamp_millis();
        let mut series = self.series.lock();
        for (name, v) in values {
            let h = series.entry(name.clone()).or_default();
            h.push_back((now, *v));
            while h.len() > KEEP {
                h.pop_front();
            }
        }
        series.retain(|_, h| h.back().is_some_and(|(t, _)| now - t < 3_600_000));
    }

    /// One chart a name (`data-chart` carries the name), or `empty` when
    /// there is no sample yet.
    pub fn charts(&self, empty: &str) -> String {
        use std::fmt::Write;
        let series = self.series.lock();
        let mut names: Vec<&String> = series.keys().collect();
        names.sort();
        if names.is_empty() {
            return format!("<p>{}</p>", esc(empty));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut html = String::new();
        for name in names {
            let points = &series[name];
            let max = points.iter().map(|(_, v)| *v).fold(1.0f64, f64::max);
            let coords: Vec<String> = points
                .iter()
                .map(|(t, v)| {
                    let x = 300.0 - ((now - t) as f64 / 3_600_000.0 * 300.0).min(300.0);
                    let y = 40.0 - v / max * 38.0;
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = write!(
                html,
                "<div class=\"chart\" data-chart=\"{}\"><span>{} (max {max:.0} s)</span>\
                 <svg width=\"300\" height=\"42\" viewBox=\"0 0 300 42\" role=\"img\">\
                 <polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"{}\"/>\
                 </svg></div>",
                esc(name),
                esc(name),
                coords.join(" ")
            );
        }
        html
    }
}

/// Text made safe inside HTML.
pub fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_at_most_every_ten_seconds_and_draws_one_chart_a_name() {
        let h = History::default();
        assert!(h.charts("none yet").contains("none yet"));
        h.sample(&[("a<b".into(), 3.0), ("c".into(), 0.0)]);
        h.sample(&[("a<b".into(), 9.0)]);
        let html = h.charts("");
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("data-chart=\"a&lt;b\""), "{html}");
        assert!(html.contains("(max 3 s)"), "{html}");
    }
}
