//! What a new user tries first: a database job set up before the database
//! has any tables (empty, or views only), then tables, rows and views created
//! on the source afterwards.

use crate::full_sync::checksums;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use serde_json::json;

async fn create_and_fill_later(prefix: &str, initial: &str) {
    let db = unique(prefix);
    let dest_db = unique(&format!("{prefix}_copy"));
    source().admin(&format!("CREATE DATABASE {db}; USE {db}; {initial}"));
    let service = Service::fresh().await;
    let name = unique("first");
    service
        .post(
            "create_ccr",
            json!({"name": name,
                   "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, &name, "DBIncrementalSync").await;
    source().admin(&format!(
        "USE {db};
         CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, 'three');
         CREATE TABLE b (k VARCHAR(10), n INT);
         INSERT INTO b VALUES ('x', 1), ('y', 2);
         UPDATE a SET v = 'TWO' WHERE id = 2;
         DELETE FROM b WHERE k = 'x';
         CREATE VIEW va AS SELECT id, v FROM a WHERE id > 1;"
    ));
    wait_caught_up(&service, &name, source()).await;
    let progress = service
        .post("job_progress", json!({"name": name}))
        .await
        .ok();
    assert_eq!(
        progress["job_progress"]["progress_state"], "DBIncrementalSync",
        "{progress:#}"
    );
    assert_eq!(
        checksums(source(), &db, &["a", "b"]),
        checksums(dest(), &dest_db, &["a", "b"])
    );
    assert_eq!(
        dest().admin(&format!("SELECT id, v FROM {dest_db}.va ORDER BY id")),
        "2\tTWO\n3\tthree"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_on_an_empty_database_carries_tables_created_later() {
    create_and_fill_later("empty_db", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_on_a_database_with_only_views_carries_tables_created_later() {
    create_and_fill_later("views_db", "CREATE VIEW v1 AS SELECT 1 AS one;").await;
}
