//! Parallel snapshot transactions all see the source as of one position, on
//! a quiet source and under a concurrent write load.

use crate::harness::mariadb::{SRC_PASSWORD, SRC_USER, SRC_USER_NO_RELOAD};
use crate::harness::*;
use ccr_syncer::db::ServerAddr;
use ccr_syncer::secret::Secret;
use ccr_syncer::source::snapshot::{self, SnapshotError, SnapshotSet};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn table() -> String {
    let db = unique("snap");
    source().admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT); \
         INSERT INTO {db}.t (v) VALUES (1), (2), (3)"
    ));
    format!("{db}.t")
}

/// Every connection of the set sees the same rows.
async fn assert_same_view(set: &mut SnapshotSet, table: &str) -> (i64, i64) {
    let mut views = Vec::new();
    for conn in set.conns.iter_mut() {
        let view: Option<(i64, i64)> = conn
            .query_first(format!("SELECT COUNT(*), COALESCE(SUM(v), 0) FROM {table}"))
            .await
            .unwrap();
        views.push(view.unwrap());
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "snapshots disagree: {views:?} lock={:?} at {}",
        set.lock_held,
        set.coord
    );
    views[0]
}

/// Inserts rows as fast as one connection can until stopped (at most 20 s).
fn start_writer(table: String) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let root = Secret::new("");
        let addr = ServerAddr {
            host: "127.0.0.1",
            port: source().port,
            user: "root",
            password: &root,
            tls: &ccr_syncer::tls::TlsOptions::default(),
        };
        let mut conn = ccr_syncer::db::connect(&addr, None, TIMEOUT).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            conn.query_drop(format!("INSERT INTO {table} (v) VALUES (1)"))
                .await
                .unwrap();
            n += 1;
        }
        n
    });
    (stop, task)
}

fn addr<'a>(user: &'a str, password: &'a Secret) -> ServerAddr<'a> {
    ServerAddr {
        host: "127.0.0.1",
        port: source().port,
        user,
        password,
        tls: &DEFAULT_TLS,
    }
}

static DEFAULT_TLS: ccr_syncer::tls::TlsOptions = ccr_syncer::tls::TlsOptions {
    mode: ccr_syncer::tls::TlsMode::Preferred,
    ca: None,
    cert: None,
    key: None,
    server_name: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_needs_no_lock() {
    let table = table();
    let password = Secret::new(SRC_PASSWORD);
    let mut set = snapshot::open(&addr(SRC_USER, &password), 1, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(set.conns.len(), 1);
    assert!(set.lock_held.is_none());
    assert!(!set.gtid.is_empty());
    // Rows written after P are invisible to the snapshot.
    source().admin(&format!("INSERT INTO {table} (v) VALUES (10)"));
    assert_eq!(assert_same_view(&mut set, &table).await, (3, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_snapshots_agree_under_writes() {
    let table = table();
    let (stop, writer) = start_writer(table.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let root = Secret::new("");
    for _ in 0..5 {
        let mut set = snapshot::open(&addr("root", &root), 4, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(set.conns.len(), 4);
        let held = set
            .lock_held
            .expect("parallel snapshots start under the lock");
        assert!(held < Duration::from_secs(1), "lock held {held:?}");
        assert_same_view(&mut set, &table).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        writer.await.unwrap() > 0,
        "the writer wrote during the test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_snapshots_without_reload_are_refused() {
    let password = Secret::new(SRC_PASSWORD);
    match snapshot::open(&addr(SRC_USER_NO_RELOAD, &password), 4, TIMEOUT).await {
        Err(e @ SnapshotError::NeedsReload { .. }) => {
            assert!(e.to_string().contains("RELOAD"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("parallel snapshots opened without RELOAD"),
    }
}
