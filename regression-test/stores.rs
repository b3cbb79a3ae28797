//! The meta store contract, run against both backends.

use crate::restart::mysql_store_config;
use ccr_syncer::config::StoreConfig;
use ccr_syncer::hostmap::HostMapping;
use ccr_syncer::job::spec::{Endpoint, JobSpec, SyncType};
use ccr_syncer::job::state::{JobStatus, Progress, ProgressState, RunState};
use ccr_syncer::secret::Secret;
use ccr_syncer::store::{self, Fence, GroupStore, JobRecord, StoreError};

fn record(name: &str) -> JobRecord {
    let endpoint = |db: &str, password: &str| Endpoint {
        host: "10.0.0.1".into(),
        port: 3306,
        user: "u".into(),
        password: Secret::new(password),
        database: db.into(),
        table: None,
        host_mapping: HostMapping::default(),
        tls: Default::default(),
        minder: None,
    };
    JobRecord {
        spec: JobSpec {
            name: name.into(),
            src: endpoint("a", "src-secret"),
            dest: endpoint("b", "dest-secret"),
            allow_table_exists: false,
            on_binlog_purged: Default::default(),
        },
        status: JobStatus::initial(SyncType::Db),
        progress: Progress::default(),
        created_at: 1_000,
        updated_at: 1_000,
    }
}

async fn contract(config: StoreConfig) {
    let store = store::open(&config, Default::default())
        .await
        .expect("open");
    assert!(store.load_jobs().await.unwrap().is_empty());

    let a = record("a");
    store.insert_job(&a).await.unwrap();
    store.insert_job(&record("b")).await.unwrap();
    assert!(matches!(store.insert_job(&a).await, Err(StoreError::Duplicate(n)) if n == "a"));
    let loaded = store.load_jobs().await.unwrap();
    assert_eq!(
        loaded
            .iter()
            .map(|j| j.spec.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(loaded[0], a, "passwords and every field round-trip");

    let status = JobStatus {
        run_state: RunState::Paused,
        progress_state: ProgressState::DBIncrementalSync,
    };
    let progress = Progress {
        commit_seq: Some(42),
        position: Some("0-1-42".into()),
        ..Progress::default()
    };
    // A job nobody holds yet has the empty owner at epoch 0; once a member
    // holds it, only that member at that epoch may save.
    let unowned = Fence {
        member: String::new(),
        epoch: 0,
    };
    store
        .save_status("a", &unowned, status, &progress, 2_000)
        .await
        .unwrap();
    // Saving the same status again is not an error.
    store
        .save_status("a", &unowned, status, &progress, 2_000)
        .await
        .unwrap();
    assert!(matches!(
        store.save_status("zz", &unowned, status, &progress, 1).await,
        Err(StoreError::NotFound(n)) if n == "zz"
    ));
    let group = GroupStore::new(store.clone());
    let lease = group.lease_of("a").await.unwrap().unwrap();
    assert!(group.assign(&lease, "m1", i64::MAX).await.unwrap());
    assert!(
        !group.assign(&lease, "m2", i64::MAX).await.unwrap(),
        "a stale assignment loses"
    );
    let held = Fence {
        member: "m1".into(),
        epoch: 1,
    };
    store
        .save_status("a", &held, status, &progress, 2_000)
        .await
        .unwrap();
    for stale in [
        &unowned,
        &Fence {
            member: "m1".into(),
            epoch: 0,
        },
        &Fence {
            member: "m2".into(),
            epoch: 1,
        },
    ] {
        assert!(matches!(
            store
                .save_status("a", stale, status, &progress, 2_000)
                .await,
            Err(StoreError::Fenced { .. })
        ));
    }

    let mut spec = a.spec.clone();
    spec.src
        .host_mapping
        .update([("172.16.0.1".to_string(), "1.2.3.4".to_string())].into())
        .unwrap();
    store.save_spec(&spec, &held, 3_000).await.unwrap();
    assert!(matches!(
        store.save_spec(&spec, &unowned, 3_000).await,
        Err(StoreError::Fenced { .. })
    ));
    let mut missing = spec.clone();
    missing.name = "zz".into();
    assert!(matches!(
        store.save_spec(&missing, &held, 1).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(store.delete_job("b").await.unwrap());
    assert!(!store.delete_job("b").await.unwrap());

    // Reopening runs the migrations again harmlessly and finds the same data.
    drop(group);
    drop(store);
    let store = store::open(&config, Default::default())
        .await
        .expect("reopen");
    let loaded = store.load_jobs().await.unwrap();
    assert_eq!(loaded.len(), 1);
    let a2 = &loaded[0];
    assert_eq!(a2.status, status);
    assert_eq!(a2.progress, progress);
    assert_eq!(a2.spec, spec);
    assert_eq!(a2.spec.src.password.expose(), "src-secret");
    assert_eq!((a2.created_at, a2.updated_at), (1_000, 3_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    contract(StoreConfig::Sqlite {
        dir: dir.path().join("nested"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_mysql() {
    contract(mysql_store_config().store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_spec_column_holds_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(
        &StoreConfig::Sqlite {
            dir: dir.path().to_path_buf(),
        },
        Default::default(),
    )
    .await
    .unwrap();
    store.insert_job(&record("p")).await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("ccr.db")).unwrap();
    let spec: String = conn
        .query_row("SELECT spec FROM ccr_jobs", [], |r| r.get(0))
        .unwrap();
    assert!(!spec.contains("secret"), "{spec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_mysql_store_is_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = StoreConfig::Mysql {
        host: "127.0.0.1".into(),
        port: closed,
        user: "root".into(),
        password: Secret::new(""),
        database: "ccr".into(),
        tls: Default::default(),
    };
    let err = store::open(&config, Default::default())
        .await
        .err()
        .expect("no store there")
        .to_string();
    assert!(err.contains("cannot reach 127.0.0.1:"), "{err}");
}

/// The MySQL store with a key file: the password columns hold no clear
/// text, the store reopens with the key, and without it refuses, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_passwords_are_encrypted_with_the_key() {
    use ccr_syncer::secret::{generate_key_file, Keys};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    generate_key_file(&key).unwrap();
    let keys = || Keys::load(Some(&key), None).unwrap();
    let config = mysql_store_config().store;
    let StoreConfig::Mysql { database, .. } = &config else {
        unreachable!("a MySQL store")
    };
    // A job stored in clear first, then the store opened with the key.
    let store = store::open(&config, Default::default()).await.unwrap();
    store.insert_job(&record("clear")).await.unwrap();
    drop(store);
    let store = store::open(&config, keys()).await.unwrap();
    store.insert_job(&record("sealed")).await.unwrap();
    let columns = crate::harness::dest().admin(&format!(
        "SELECT src_password, dest_password FROM {database}.ccr_jobs"
    ));
    assert!(!columns.contains("secret"), "{columns}");
    assert_eq!(columns.matches("enc1:").count(), 4, "{columns}");
    let loaded = store.load_jobs().await.unwrap();
    assert_eq!(loaded[0].spec.src.password.expose(), "src-secret");
    assert_eq!(loaded[1].spec.dest.password.expose(), "dest-secret");
    drop(store);
    let err = store::open(&config, Default::default())
        .await
        .err()
        .expect("no key")
        .to_string();
    assert!(err.contains("encrypted"), "{err}");
    let after = crate::harness::dest().admin(&format!(
        "SELECT src_password, dest_password FROM {database}.ccr_jobs"
    ));
    assert_eq!(after, columns, "a refused open changed nothing");
}
