//! A group of syncers: three processes of the real binary on one MariaDB
//! store. A job runs on one member at a time; a killed owner's job is taken
//! over and nothing is lost or applied twice; a frozen owner that wakes up
//! commits nothing more (fencing); the admin API drains, moves leadership
//! and sets switches every member sees; any member answers for any job.

use crate::full_sync::checksums;
use crate::harness::*;
use crate::incremental::source_seq;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Short leases so the tests run fast; the default (8 s) is measured in
/// `shell/bench_takeover.sh`.
const LEASE_SECS: u64 = 3;

fn group_config(store_db: &str) -> String {
    format!(
        "[store]\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\n\
         password = \"\"\ndatabase = \"{store_db}\"\ntls_mode = \"disabled\"\n\
         [group]\nlease_secs = {LEASE_SECS}\nheartbeat_ms = 300\n",
        dest().port
    )
}

struct Member {
    service: Service,
    dir: tempfile::TempDir,
}

impl Member {
    async fn start(store_db: &str) -> Member {
        Member::with_config(&group_config(store_db)).await
    }

    async fn with_config(config: &str) -> Member {
        let dir = tempfile::tempdir().expect("temp dir");
        let service = Service::process(dir.path(), config).await;
        Member { service, dir }
    }

    fn id(&self) -> String {
        self.service.addr.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ccr_syncer.log")).unwrap_or_default()
    }
}

fn signal(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}

async fn stat(service: &Service) -> Value {
    service.get("stat").await.ok()
}

/// Waits until `ready` holds on member `service`'s /stat.
async fn wait_stat(
    service: &Service,
    secs: u64,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = stat(service).await;
        if ready(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {secs} s: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(stat: &Value) -> usize {
    stat["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count())
}

/// The owner of `name` as `service` reports it (forwarded to the owner).
async fn owner(service: &Service, name: &str) -> Option<String> {
    let r = service.post("job_status", json!({"name": name})).await;
    (r.status == 200).then(|| r.body["status"]["owner"].as_str().unwrap_or("").to_string())
}

/// A database job with table `t (id PK, n INT)`, in incremental sync.
async fn running_job(member: &Service, name: &str) -> (String, String) {
    let src_db = unique("grp_src");
    source().admin(&format!(
        "CREATE DATABASE {src_db}; USE {src_db}; CREATE TABLE {src_db}.t (id INT AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL);
         INSERT INTO {src_db}.t (n) SELECT 0 FROM seq_1_to_50"
    ));
    let dest_db = unique("grp_dst");
    create(member, name, &src_db, &dest_db).await;
    wait_for_state(member, name, "DBIncrementalSync").await;
    (src_db, dest_db)
}

/// `create_ccr` of a database job from `src_db` into `dest_db`; its answer.
async fn create(member: &Service, name: &str, src_db: &str, dest_db: &str) -> Value {
    member
        .post(
            "create_ccr",
            json!({"name": name, "src": src_endpoint(source(), src_db, None),
                   "dest": dest_endpoint(dest(), dest_db, None)}),
        )
        .await
        .ok()
}

/// Inserts and increments: a transaction applied twice or lost changes the
/// checksum.
fn load(src_db: &str) -> Writer {
    Writer::start(src_db, 3, |i| {
        format!(
            "INSERT INTO t (n) VALUES ({i}); UPDATE t SET n = n + 1 WHERE id = {};",
            i % 50 + 1
        )
    })
}

async fn caught_up_and_equal(member: &Service, name: &str, src_db: &str, dest_db: &str) {
    let target = source_seq(source());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let lag = member.post("get_lag", json!({"name": name})).await;
        if lag.status == 200 && lag.body["first_commit_seq"].as_u64().unwrap_or(0) >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} did not catch up to {target}: {}",
            lag.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        checksums(source(), src_db, &["t"]),
        checksums(dest(), dest_db, &["t"]),
        "destination equals source"
    );
    let count = |s: &MariaDb, db: &str| s.admin(&format!("SELECT COUNT(*), SUM(n) FROM {db}.t"));
    assert_eq!(count(source(), src_db), count(dest(), dest_db));
}

fn checkpoint_epoch(dest_db: &str, name: &str) -> i64 {
    dest()
        .admin(&format!(
            "SELECT owner_epoch FROM {dest_db}._ccr_syncer_checkpoint WHERE job = '{name}'"
        ))
        .trim()
        .parse()
        .unwrap_or(-1)
}

async fn three(store_db: &str) -> Vec<Member> {
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::start(store_db).await);
    }
    wait_stat(&members[0].service, 20, "three live members", |s| {
        alive(s) == 3
    })
    .await;
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_is_taken_over_nothing_lost_or_twice() {
    let store_db = unique("grp_meta");
    let mut members = three(&store_db).await;
    let name = "grp_kill";
    let (src_db, dest_db) = running_job(&members[0].service, name).await;
    let first = owner(&members[1].service, name)
        .await
        .expect("any member answers");
    let writer = load(&src_db);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i = members
        .iter()
        .position(|m| m.id() == first)
        .expect("the owner is a member");
    let killed = members.remove(i);
    let killed_at = Instant::now();
    killed.service.kill();
    let other = &members[0].service;
    let deadline = Instant::now() + Duration::from_secs(15);
    let next = loop {
        if let Some(o) = owner(other, name)
            .await
            .filter(|o| !o.is_empty() && *o != first)
        {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "no member took job {name} over within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");
    assert_ne!(next, first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.stop();
    caught_up_and_equal(other, name, &src_db, &dest_db).await;
    let s = stat(other).await;
    assert_eq!(s["jobs"]["total"], 1);
    let dead = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == first)
        .cloned();
    assert_eq!(dead.expect("the killed member is listed")["state"], "dead");
    let metrics = other.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_syncer_group_members{state=\"dead\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ccr_syncer_group_members{state=\"alive\"} 2"),
        "{metrics}"
    );
    assert!(
        checkpoint_epoch(&dest_db, name) >= 2,
        "the new owner claimed the destination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_owner_wakes_up_fenced() {
    let store_db = unique("grp_meta");
    let members = three(&store_db).await;
    let name = "grp_freeze";
    let (src_db, dest_db) = running_job(&members[0].service, name).await;
    let first = owner(&members[0].service, name).await.unwrap();
    let frozen = members.iter().find(|m| m.id() == first).unwrap();
    let other = &members.iter().find(|m| m.id() != first).unwrap().service;
    let epoch_before = checkpoint_epoch(&dest_db, name);
    let writer = load(&src_db);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = frozen.service.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    // (Asking the frozen member for the job would wait for its answer: the
    // group's view says who holds it.)
    let s = wait_stat(other, 20, "another member holding the job", |s| {
        s["jobs"]["owners"][name]
            .as_str()
            .is_some_and(|o| o != first)
    })
    .await;
    let next = s["jobs"]["owners"][name].as_str().unwrap().to_string();
    // Let the new owner apply for a while, then wake the old one up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claimed = checkpoint_epoch(&dest_db, name);
    assert!(
        claimed > epoch_before,
        "the new owner claimed at a new epoch"
    );
    signal(pid, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    writer.stop();
    let writer = load(&src_db);
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop();
    caught_up_and_equal(other, name, &src_db, &dest_db).await;
    assert_eq!(
        checkpoint_epoch(&dest_db, name),
        claimed,
        "only the new owner's epoch wrote"
    );
    assert_eq!(owner(other, name).await.unwrap(), next);
    assert_eq!(
        owner(&frozen.service, name).await.unwrap(),
        next,
        "the woken member forwards"
    );
    let log = frozen.log();
    assert!(
        log.contains("lost the job"),
        "the woken member says it lost the job:\n{log}"
    );
    let metrics = frozen.service.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_syncer_group_jobs_lost_total 1"),
        "{metrics}"
    );
    let s = stat(&frozen.service).await;
    assert!(
        s["jobs_lost"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["job"] == name),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_drains_transfers_and_switches() {
    let store_db = unique("grp_meta");
    let members = three(&store_db).await;
    let (a, b, c) = (
        &members[0].service,
        &members[1].service,
        &members[2].service,
    );

    // One name created on two members at once: one job.
    let spec = db_job("grp_once");
    let (x, y) = tokio::join!(
        a.post("create_ccr", spec.clone()),
        b.post("create_ccr", spec)
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", x.text, y.text);
    assert_eq!(job_names(c).await, ["grp_once"]);
    for i in 0..3 {
        let name = format!("grp_spread_{i}");
        let created = a.post("create_ccr", db_job(&name)).await.ok();
        // The job has its owner from the start: asking at once is answered.
        let st = a.post("job_status", json!({"name": name})).await.ok();
        assert_eq!(st["status"]["owner"], created["owner"], "{st:#}");
    }
    // Jobs are spread: every member holds one or two of the four.
    let s = wait_stat(a, 20, "jobs spread", |s| {
        s["jobs"]["unowned"] == 0
            && s["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["jobs_owned"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(s["jobs"]["total"], 4);
    // Any member answers for any job, and says who owns it.
    for m in [a, b, c] {
        let st = m
            .post("job_status", json!({"name": "grp_spread_1"}))
            .await
            .ok();
        assert!(!st["status"]["owner"].as_str().unwrap().is_empty());
        m.post("job_progress", json!({"name": "grp_once"}))
            .await
            .ok();
    }

    // Errors: unknown and duplicate ids, bad types, the leader.
    a.post("member/remove", json!({"peer_id": "nobody:1"}))
        .await
        .fails(404, "not a member");
    a.post(
        "member/add",
        json!({"peer_id": members[1].id(), "host": members[1].id(), "member_type": 2}),
    )
    .await
    .fails(409, "already a member");
    a.post(
        "member/add",
        json!({"peer_id": "x", "host": "h:1", "member_type": 7}),
    )
    .await
    .fails(400, "member_type");
    a.post("member/add", json!({"host": "h:1"}))
        .await
        .fails(400, "peer_id is missing");
    a.post("member/add", json!({"peer_id": "x", "host": "nohost"}))
        .await
        .fails(400, "host");
    a.post_raw("member/add", "{nope")
        .await
        .fails(400, "malformed JSON");
    let leader = s["leader"].as_str().unwrap().to_string();
    a.post("member/remove", json!({"peer_id": leader}))
        .await
        .fails(409, "leader");
    a.post("leadership/transfer", json!({"peer_id": leader}))
        .await
        .fails(409, "already leads");
    a.post(
        "member/add",
        json!({"peer_id": "learner-1", "host": "127.0.0.1:1", "member_type": 1}),
    )
    .await
    .ok();
    a.post("leadership/transfer", json!({"peer_id": "learner-1"}))
        .await
        .fails(409, "learner");

    // Leadership moves to a member that is not the leader.
    let target = members
        .iter()
        .map(|m| m.id())
        .find(|id| *id != leader)
        .unwrap();
    let term = s["term"].as_i64().unwrap();
    let moved = a
        .post("leadership/transfer", json!({"peer_id": target}))
        .await
        .ok();
    assert!(moved["term"].as_i64().unwrap() > term);
    for m in [a, b, c] {
        wait_stat(m, 10, "the new leader", |s| s["leader"] == target.as_str()).await;
    }

    // A switch set on one member is seen by every member.
    c.get("config/get?key=balance").await.ok();
    assert_eq!(
        c.get("config/get?key=balance").await.ok()["value"],
        "Enable"
    );
    a.post("config/set", json!({"key": "balance", "value": "Disable"}))
        .await
        .ok();
    a.post("config/set", json!({"key": "balance", "value": "Off"}))
        .await
        .fails(400, "Enable");
    a.post(
        "config/set",
        json!({"key": "disk_repair", "value": "Enable"}),
    )
    .await
    .fails(400, "unknown key");
    a.get("config/get").await.fails(400, "key=");
    for m in [a, b, c] {
        assert_eq!(
            m.get("config/get?key=balance").await.ok()["value"],
            "Disable"
        );
        wait_stat(m, 5, "the switch", |s| {
            s["switches"]["balance"] == "Disable"
        })
        .await;
    }

    // Draining a member moves its jobs to the others, then removes it.
    let drained = members
        .iter()
        .map(|m| m.id())
        .find(|id| *id != target)
        .unwrap();
    let answer = a
        .post("member/remove", json!({"peer_id": drained}))
        .await
        .ok();
    assert_eq!(answer["state"], "draining");
    a.post("member/remove", json!({"peer_id": drained}))
        .await
        .fails(409, "already being removed");
    let s = wait_stat(a, 30, "the drained member gone", |s| {
        s["jobs"]["unowned"] == 0
            && !s["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == drained.as_str())
    })
    .await;
    let owners: Vec<&str> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["jobs_owned"].as_u64() > Some(0))
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(!owners.contains(&drained.as_str()), "{s:#}");
    for name in ["grp_once", "grp_spread_0", "grp_spread_1", "grp_spread_2"] {
        let o = owner(a, name).await.unwrap();
        assert_ne!(o, drained);
        poll_job(a, "job_status", name, 30, "running", |st| {
            st["state"] == "running"
        })
        .await;
    }
    // The last normal member cannot be removed.
    let survivors: Vec<String> = members
        .iter()
        .map(|m| m.id())
        .filter(|id| *id != drained)
        .collect();
    let other = survivors.iter().find(|id| **id != target).unwrap();
    a.post("member/remove", json!({"peer_id": other}))
        .await
        .ok();
    wait_stat(a, 30, "second drain", |s| {
        !s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == other.as_str())
    })
    .await;
    a.post("member/remove", json!({"peer_id": target}))
        .await
        .fails(409, "last live normal member");
    // Pausing through any member reaches the owner; delete too.
    b.post("pause", json!({"name": "grp_once"})).await.ok();
    assert_eq!(job_status(c, "grp_once").await.0, "paused");
    c.post("delete", json!({"name": "grp_once"})).await.ok();
    a.post("job_status", json!({"name": "grp_once"}))
        .await
        .fails(404, "does not exist");
}

/// The fence itself, on a real destination: once a holder claimed the job at
/// epoch 2, a checkpoint, a DDL mark or a chunk written at epoch 1 fails
/// in its transaction, and nothing of that transaction stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_refuses_an_older_epoch() {
    use ccr_syncer::dest::{self, checkpoint};
    use ccr_syncer::position::Position;
    use mysql_async::prelude::*;
    let db = unique("grp_fence");
    dest().admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY)"
    ));
    let url = format!("mysql://root@127.0.0.1:{}/{db}", dest().port);
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    dest::session_setup(&mut conn).await.unwrap();
    checkpoint::ensure_table(&mut conn, &db).await.unwrap();
    checkpoint::claim(&mut conn, &db, "j", 1).await.unwrap();
    let cp = |epoch| checkpoint::Checkpoint {
        run_id: 5,
        position: Position::new("0-1-9", "b.000001", 4).unwrap(),
        commit_seq: Some(9),
        commit_ts: None,
        pending_ddl: None,
        epoch,
    };
    conn.query_drop(checkpoint::upsert_sql(&db, "j", &cp(1)))
        .await
        .unwrap();
    // A new holder claims at epoch 2.
    checkpoint::claim(&mut conn, &db, "j", 2).await.unwrap();
    // The old holder's next group: rows, then its checkpoint, which fails.
    conn.query_drop("START TRANSACTION").await.unwrap();
    conn.query_drop(format!("INSERT INTO {db}.t VALUES (1)"))
        .await
        .unwrap();
    let e = conn
        .query_drop(checkpoint::upsert_sql(&db, "j", &cp(1)))
        .await
        .unwrap_err();
    assert!(ccr_syncer::error::is_fenced(&e), "{e}");
    conn.query_drop("ROLLBACK").await.unwrap();
    // Its chunk: fenced too; a claim at an older epoch as well.
    let e = conn
        .query_drop(checkpoint::fence_sql(&db, "j", 1))
        .await
        .unwrap_err();
    assert!(ccr_syncer::error::is_fenced(&e), "{e}");
    let e = checkpoint::claim(&mut conn, &db, "j", 1).await.unwrap_err();
    assert!(ccr_syncer::error::is_fenced(&e), "{e}");
    // The new holder writes on.
    conn.query_drop(checkpoint::fence_sql(&db, "j", 2))
        .await
        .unwrap();
    conn.query_drop(checkpoint::upsert_sql(&db, "j", &cp(2)))
        .await
        .unwrap();
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*) FROM {db}.t")).trim(),
        "0"
    );
    assert_eq!(checkpoint_epoch(&db, "j"), 2);
}

/// Two members serving HTTPS: a call for a job the other one owns is
/// forwarded over TLS, the owner's certificate checked against
/// `[group] peer_ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_between_members_over_https() {
    use crate::harness::certs::{https, Certs};
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(&dir.path().join("certs"), "IP:127.0.0.1,DNS:localhost");
    let base = crate::restart::mysql_store_config();
    let mut stops = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let mut config = base.clone();
        config.api_tls = Some(ccr_syncer::config::ApiTls {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
        });
        config.group.peer_ca = Some(certs.ca.clone());
        config.group.lease = Duration::from_secs(LEASE_SECS);
        config.group.heartbeat = Duration::from_millis(300);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push((
            tx,
            tokio::spawn(ccr_syncer::app::run(config, listener, async move {
                let _ = rx.await;
            })),
        ));
    }
    let body_of = |answer: &str| -> Value {
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = https(addrs[0], &certs.ca, "GET", "stat", "")
            .await
            .map(|a| body_of(&a));
        if a.as_ref().is_ok_and(|s| alive(s) == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "two members over HTTPS: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = https(
        addrs[0],
        &certs.ca,
        "POST",
        "create_ccr",
        &db_job("grp_tls").to_string(),
    )
    .await
    .unwrap();
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let owner = body_of(&created)["owner"].as_str().unwrap().to_string();
    let other = if owner == addrs[0].to_string() {
        addrs[1]
    } else {
        addrs[0]
    };
    let status = https(
        other,
        &certs.ca,
        "POST",
        "job_status",
        r#"{"name": "grp_tls"}"#,
    )
    .await
    .unwrap();
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "forwarded over HTTPS: {status}"
    );
    assert_eq!(body_of(&status)["status"]["owner"], owner.as_str());
    for (tx, task) in stops {
        let _ = tx.send(());
        let _ = task.await;
    }
}

/// The store goes away for longer than a lease: every member reports the
/// group read-only and stops its jobs (no member can know who holds what,
/// so none runs anything); when the store is back the job runs again on one
/// member and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_makes_the_group_read_only_never_two_owners() {
    let proxy = Proxy::start(dest().port).await;
    let store_db = unique("grp_meta");
    let config = group_config(&store_db).replace(
        &format!("port = {}\n", dest().port),
        &format!("port = {}\n", proxy.port),
    );
    let members = [
        Member::with_config(&config).await,
        Member::with_config(&config).await,
    ];
    let (a, b) = (&members[0].service, &members[1].service);
    wait_stat(a, 20, "two live members", |s| alive(s) == 2).await;
    let name = "grp_outage";
    let (src_db, dest_db) = running_job(a, name).await;
    let writer = load(&src_db);
    proxy.set_down(true);
    let outage = Instant::now();
    for m in [a, b] {
        wait_stat(m, 10, "read-only", |s| s["read_only"] == true).await;
    }
    // Within a lease every member has stopped the job.
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS + 5);
    loop {
        let mut texts = Vec::new();
        for m in [a, b] {
            texts.push(m.get("metrics").await.text);
        }
        if texts.iter().all(|t| t.contains("ccr_syncer_jobs 0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a member still runs the job in the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(outage.elapsed() < Duration::from_secs(LEASE_SECS + 5));
    let metrics = a.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_syncer_group_read_only 1"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_down(false);
    for m in [a, b] {
        wait_stat(m, 20, "writable again", |s| s["read_only"] == false).await;
    }
    poll_job(a, "job_status", name, 30, "running again", |s| {
        s["state"] == "running"
    })
    .await;
    writer.stop();
    caught_up_and_equal(a, name, &src_db, &dest_db).await;
}

/// The owner is frozen in the middle of a full sync: another member takes
/// the job over and resumes the copy from the chunks committed; the frozen
/// one, woken, commits no further chunk; the copy is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_during_a_full_sync_the_copy_resumes_elsewhere() {
    let store_db = unique("grp_meta");
    let config = format!(
        "{}[full_sync]\nchunk_rows = 2000\nconnections = 2\n",
        group_config(&store_db)
    );
    let members = [
        Member::with_config(&config).await,
        Member::with_config(&config).await,
    ];
    wait_stat(&members[0].service, 20, "two live members", |s| {
        alive(s) == 2
    })
    .await;
    let src_db = table_t(source(), "grp_fs", 300_000);
    let dest_db = unique("grp_fs_dst");
    let name = "grp_fullsync";
    let created = create(&members[0].service, name, &src_db, &dest_db).await;
    let first = created["owner"].as_str().unwrap().to_string();
    let frozen = members.iter().find(|m| m.id() == first).unwrap();
    let other = &members.iter().find(|m| m.id() != first).unwrap().service;
    let copying = poll_job(
        &frozen.service,
        "job_progress",
        name,
        60,
        "chunks copied",
        |p| p["full_sync"]["rows_copied"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    assert_eq!(copying["progress_state"], "DBFullSync", "{copying:#}");
    let pid = frozen.service.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    wait_stat(other, 20, "another member holding the job", |s| {
        s["jobs"]["owners"][name]
            .as_str()
            .is_some_and(|o| o != first)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(pid, libc::SIGCONT);
    wait_for_state(other, name, "DBIncrementalSync").await;
    assert_eq!(
        checksums(source(), &src_db, &["t"]),
        checksums(dest(), &dest_db, &["t"])
    );
    assert!(checkpoint_epoch(&dest_db, name) >= 2);
    assert_eq!(
        dest()
            .admin(&format!("SELECT COUNT(*) FROM {dest_db}.t"))
            .trim(),
        "300000"
    );
}

/// A member added as a learner with `/member/add` joins when a syncer starts
/// with its id: it serves the API (forwarding) but is never given a job,
/// and cannot lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_serves_the_api_and_owns_no_jobs() {
    let store_db = unique("grp_meta");
    let normal = Member::start(&store_db).await;
    let a = &normal.service;
    a.post(
        "member/add",
        json!({"peer_id": "learner-7", "host": "127.0.0.1:9", "member_type": 1}),
    )
    .await
    .ok();
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}member_id = \"learner-7\"\n", group_config(&store_db));
    let learner = Service::process(dir.path(), &config).await;
    let s = wait_stat(&learner, 20, "the learner alive", |s| alive(s) == 2).await;
    let me = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "learner-7")
        .cloned()
        .unwrap();
    assert_eq!(me["learner"], true);
    assert_eq!(me["address"], format!("http://{}", learner.addr));
    assert_eq!(s["raft_status"]["raftState"], "StateLearner");
    for i in 0..2 {
        let created = learner
            .post("create_ccr", db_job(&format!("grp_learn_{i}")))
            .await
            .ok();
        assert_eq!(
            created["owner"],
            normal.id().as_str(),
            "a learner is given no job"
        );
    }
    let st = learner
        .post("job_status", json!({"name": "grp_learn_1"}))
        .await
        .ok();
    assert_eq!(st["status"]["owner"], normal.id().as_str());
    learner
        .post("leadership/transfer", json!({"peer_id": "learner-7"}))
        .await
        .fails(409, "learner");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = stat(a).await;
    let owned = |id: &str| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["jobs_owned"]
            .clone()
    };
    assert_eq!(
        owned("learner-7"),
        0,
        "balancing gives a learner nothing: {s:#}"
    );
    assert_eq!(owned(&normal.id()), 2);
}
