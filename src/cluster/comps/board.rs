//! What the compute layer shows: its metrics (DDL carried and refused,
//! how long DDL took to reach the shards, table moves and their write
//! block), the latest DDL outcomes and the moves in flight, for the status
//! page.

use parking_lot::Mutex;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::collections::{BTreeMap, VecDeque};

/// One DDL statement the follower handled.
#[derive(Clone, Debug)]
pub struct DdlOutcome {
    pub at_ms: i64,
    pub cluster_id: String,
    pub comp: String,
    pub statement: String,
    /// `carried`, `refused`.
    pub outcome: String,
    pub detail: String,
}

pub struct Board {
    pub ddl: IntCounterVec,
    pub ddl_refused: IntCounterVec,
    pub ddl_lag: GaugeVec,
    pub moves: IntCounterVec,
    pub cutover_block: HistogramVec,
    recent: Mutex<VecDeque<DdlOutcome>>,
    /// Moves in flight: job id → what it is doing.
    moves_now: Mutex<BTreeMap<String, String>>,
    /// The compute nodes as the keeper last saw them: `(cluster, name,
    /// address, state)`.
    comps: Mutex<Vec<(String, String, String, String)>>,
}

const RECENT: usize = 20;

impl Board {
    pub fn new(registry: &Registry) -> Board {
        let ddl = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_ddl_total",
                "DDL statements taken by a compute node and carried to the shards and the other compute nodes.",
            ),
            &["cluster_id"],
        )
        .expect("valid metric");
        let ddl_refused = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_ddl_refused_total",
                "DDL statements taken by a compute node that the compute layer cannot carry (each is a failed `ddl` job in list_jobs).",
            ),
            &["cluster_id"],
        )
        .expect("valid metric");
        let ddl_lag = GaugeVec::new(
            Opts::new(
                "ccr_cluster_ddl_propagation_seconds",
                "How long the last DDL statement took from its compute node's commit to every shard and compute node.",
            ),
            &["cluster_id"],
        )
        .expect("valid metric");
        let moves = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_table_moves_total",
                "Table moves between shards (expand_cluster), by outcome: switched, backed_out (the cutover could not hold within cutover_max_ms; tried again), switched_back (cancelled after the switch).",
            ),
            &["cluster_id", "outcome"],
        )
        .expect("valid metric");
        let cutover_block = HistogramVec::new(
            HistogramOpts::new(
                "ccr_cluster_cutover_block_seconds",
                "How long a table move's cutover held the table's writes.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
            &["cluster_id"],
        )
        .expect("valid metric");
        for m in [
            Box::new(ddl.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ddl_refused.clone()),
            Box::new(ddl_lag.clone()),
            Box::new(moves.clone()),
            Box::new(cutover_block.clone()),
        ] {
            let _ = registry.register(m);
        }
        Board {
            ddl,
            ddl_refused,
            ddl_lag,
            moves,
            cutover_block,
            recent: Mutex::new(VecDeque::new()),
            moves_now: Mutex::new(BTreeMap::new()),
            comps: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, o: DdlOutcome) {
        let mut r = self.recent.lock();
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back(o);
    }

    /// A move says what it does now (`None`: it ended).
    pub fn moving(&self, job_id: &str, what: Option<String>) {
        let mut m = self.moves_now.lock();
        match what {
            Some(w) => {
                m.insert(job_id.to_string(), w);
            }
            None => {
                m.remove(job_id);
            }
        }
    }

    /// The keeper saw none.
    pub fn no_comps(&self) -> bool {
        self.comps.lock().is_empty()
    }

    /// What the keeper saw of every compute node.
    pub fn comps_seen(&self, seen: Vec<(String, String, String, String)>) {
        *self.comps.lock() = seen;
    }

    /// The status page's section: compute nodes, moves in flight and the
    /// latest DDL.
    pub fn html(&self) -> String {
        let esc = crate::history::esc;
        let mut out = String::from("<h3>Compute nodes</h3>");
        let comps = self.comps.lock().clone();
        if comps.is_empty() {
            out.push_str("<p>none</p>");
        } else {
            out.push_str("<table><tr><th>cluster</th><th>compute node</th><th>address</th><th>state</th></tr>");
            for (c, n, a, s) in &comps {
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(c),
                    esc(n),
                    esc(a),
                    esc(s)
                ));
            }
            out.push_str("</table>");
        }
        out.push_str("<h3>Table moves in flight</h3>");
        let moves = self.moves_now.lock();
        if moves.is_empty() {
            out.push_str("<p>none</p>");
        } else {
            out.push_str("<table><tr><th>job</th><th>now</th></tr>");
            for (job, what) in moves.iter() {
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(job),
                    esc(what)
                ));
            }
            out.push_str("</table>");
        }
        out.push_str("<h3>DDL through the compute nodes (latest)</h3>");
        let recent = self.recent.lock();
        if recent.is_empty() {
            out.push_str("<p>none yet</p>");
            return out;
        }
        out.push_str(
            "<table><tr><th>when</th><th>cluster</th><th>compute node</th><th>statement</th>\
             <th>outcome</th><th>detail</th></tr>",
        );
        for o in recent.iter().rev() {
            let when = chrono::DateTime::from_timestamp_millis(o.at_ms)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            out.push_str(&format!(
                "<tr><td>{when}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&o.cluster_id),
                esc(&o.comp),
                esc(&o.statement),
                esc(&o.outcome),
                esc(&o.detail)
            ));
        }
        out.push_str("</table>");
        out
    }
}
