//! A CCR job whose source is a minded Galera cluster (`src.minder`): it
//! reads from one node, and when that node is drained or dies it moves to a
//! Synced node of the Primary component at its GTID; the destination stays
//! equal to the cluster, nothing lost or applied twice.

use crate::harness::galera::Node;
use crate::harness::{dest, dest_endpoint, unique, wait_for_state, Service};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct Follower {
    rt: tokio::runtime::Runtime,
    service: Option<Service>,
    db: String,
    dest_db: String,
    next_id: u32,
}

const NAME: &str = "minded";

impl Follower {
    /// The job from `source` (a node of the cluster) to the shared plain
    /// destination, following through `arbitrator`; bad `minder` values are
    /// refused first.
    pub fn start(source: &Node, arbitrator: &str) -> Follower {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = unique("minded");
        source.sql(&format!(
            "CREATE USER IF NOT EXISTS 'ccr_minded'@'%' IDENTIFIED BY 'Minded-Pa55'; \
             GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT, SHOW VIEW ON *.* TO 'ccr_minded'@'%'; \
             CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO {db}.t VALUES (1, 'a'), (2, 'b')"
        ));
        let dest_db = unique("minded_copy");
        let src = |minder: &str| {
            json!({"host": source.ip, "port": source.port, "user": "ccr_minded",
                   "password": "Minded-Pa55", "database": db, "minder": minder})
        };
        let service = rt.block_on(async {
            let service = Service::fresh().await;
            let create = |src: Value| {
                json!({"name": NAME, "src": src, "dest": dest_endpoint(dest(), &dest_db, None)})
            };
            // Refused, and nothing stored: not host:port, an arbitrator
            // that does not answer, a minded destination.
            service
                .post("create_ccr", create(src("nowhere")))
                .await
                .fails(400, "src.minder");
            let silent = format!("{}:1", source.ip);
            let refused = service.post("create_ccr", create(src(&silent))).await;
            refused.fails(400, "does not answer");
            crate::minder::record("ccr_refused.txt", refused.error_msg());
            let mut minded_dest = dest_endpoint(dest(), &dest_db, None);
            minded_dest["minder"] = json!(arbitrator);
            service
                .post(
                    "create_ccr",
                    json!({"name": NAME, "src": src(arbitrator), "dest": minded_dest}),
                )
                .await
                .fails(400, "dest.minder");
            service.post("create_ccr", create(src(arbitrator))).await.ok();
            wait_for_state(&service, NAME, "DBIncrementalSync").await;
            service
        });
        Follower {
            rt,
            service: Some(service),
            db,
            dest_db,
            next_id: 10,
        }
    }

    /// Writes a row on `writer`, then waits until the job reads from
    /// `reading` (as `job_status` names it) and the destination holds
    /// exactly what the cluster holds.
    pub fn wait_reading(&mut self, reading: &Node, writer: &Node) -> Value {
        self.next_id += 1;
        writer.sql(&format!(
            "INSERT INTO {}.t VALUES ({}, 'on {}')",
            self.db, self.next_id, writer.name
        ));
        let want = writer.sql(&format!("SELECT COUNT(*), SUM(id) FROM {}.t", self.db));
        let deadline = Instant::now() + Duration::from_secs(60);
        let service = self.service.as_ref().unwrap();
        loop {
            let status = self.rt.block_on(async {
                service.post("job_status", json!({"name": NAME})).await.ok()["status"].clone()
            });
            let got = dest().admin(&format!("SELECT COUNT(*), SUM(id) FROM {}.t", self.dest_db));
            if status["source_node"]["name"] == reading.name.as_str()
                && status["source_node"]["address"] == reading.address()
                && got == want
                && status["retrying"] == false
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the job reading {} with {want} on the destination: {got}, {status:#}",
                reading.name
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            self.rt.block_on(s.stop());
        }
    }
}
