//! The status page's section on the managed clusters, from what the
//! watcher last saw.

use super::{ShardWatch, Watch};

impl Watch {
    /// The status page's section: every watched shard's nodes (role, state,
    /// read-only, replication lag, semi-sync), its state, and each
    /// replica's lag over the last hour as a small chart (inline SVG).
    pub fn html(&self) -> String {
        use std::fmt::Write;
        let esc = |t: &str| {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut shards: Vec<((String, i64), ShardWatch)> = self
            .shards
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        let mut html = String::from("<h2>Clusters</h2>");
        if shards.is_empty() {
            html.push_str(
                "<p>No managed shard is watched here (the group's leader watches them).</p>",
            );
            return html;
        }
        html.push_str(
            "<table><thead><tr><th>cluster</th><th>shard</th><th>node</th><th>role</th>\
             <th>state</th><th>read-only</th><th>replication</th><th>lag (s)</th>\
             <th>semi-sync</th><th>shard state</th></tr></thead><tbody>",
        );
        for ((cluster, shard), w) in &shards {
            for n in &w.nodes {
                let role = if n.name() == w.primary {
                    "primary"
                } else {
                    "replica"
                };
                let repl = if role == "primary" {
                    "—".to_string()
                } else if !n.reachable {
                    "unreachable".to_string()
                } else {
                    format!(
                        "IO {} / SQL {}",
                        if n.io.is_empty() { "—" } else { &n.io },
                        if n.sql { "Yes" } else { "No" }
                    )
                };
                let _ = write!(
                    html,
                    "<tr data-node=\"{}\"><td>{}</td><td>{shard}</td><td>{}</td>\
                     <td data-field=\"role\">{role}</td><td data-field=\"state\">{}</td>\
                     <td data-field=\"read_only\">{}</td><td>{}</td>\
                     <td data-field=\"lag\" class=\"num\">{}</td><td>{}</td>\
                     <td data-field=\"shard_state\">{}</td></tr>",
                    esc(&n.name()),
                    esc(cluster),
                    esc(&n.name()),
                    esc(&n.state),
                    if !n.reachable {
                        "—"
                    } else if n.read_only {
                        "yes"
                    } else {
                        "no"
                    },
                    esc(&repl),
                    n.delay.map_or("—".to_string(), |d| d.to_string()),
                    if role == "primary" && n.semi_sync_master {
                        "master on"
                    } else {
                        ""
                    },
                    esc(&w.state),
                );
            }
        }
        html.push_str("</tbody></table><h3>Replication lag, last hour</h3>");
        html.push_str(&self.lag.charts("No sample yet (one every 10 s)."));
        html
    }
}
