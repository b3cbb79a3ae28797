//! Bad requests get a clear error with a fitting status, and change nothing.

use crate::harness::*;
use serde_json::json;

const NAMED_OPERATIONS: [&str; 12] = [
    "get_lag",
    "pause",
    "resume",
    "delete",
    "job_detail",
    "job_progress",
    "job_status",
    "desync",
    "force_fullsync",
    "update_host_mapping",
    "add_host_mapping",
    "job_skip_binlog",
];

fn body_for(operation: &str, name: &str) -> serde_json::Value {
    match operation {
        "update_host_mapping" | "add_host_mapping" => {
            json!({"name": name, "src_host_mapping": {"a": "b"}})
        }
        "job_skip_binlog" => json!({"name": name, "skip_by": "fullsync"}),
        _ => json!({"name": name}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_is_404_for_every_operation() {
    let service = Service::fresh().await;
    for operation in NAMED_OPERATIONS {
        service
            .post(operation, body_for(operation, "nosuchjob"))
            .await
            .fails(404, "job nosuchjob does not exist");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_for_every_operation() {
    let service = Service::fresh().await;
    service.post("create_ccr", table_job("keep")).await.ok();
    let mut operations = NAMED_OPERATIONS.to_vec();
    operations.push("create_ccr");
    for operation in operations {
        let cases: [(&str, &str); 5] = [
            ("{\"name\": ", "EOF while parsing"),
            ("[1]", "expected a JSON object"),
            (
                "{\"name\": 5}",
                "invalid type: integer `5`, expected a string",
            ),
            ("", "missing field `name`"),
            (
                "{\"name\": \"keep\", \"bogus\": 1}",
                "unknown field `bogus`",
            ),
        ];
        for (body, needle) in cases {
            let reply = service.post_raw(operation, body).await;
            assert_eq!(reply.status, 400, "{operation} {body}: {}", reply.text);
            assert!(
                reply.error_msg().contains(needle),
                "{operation} {body}: {}",
                reply.text
            );
        }
        // An empty name is refused; bodies that also lack a required field
        // name that field first.
        let needle = match operation {
            "create_ccr" => "missing field `src`",
            "job_skip_binlog" => "missing field `skip_by`",
            _ => "name is empty",
        };
        service
            .post(operation, json!({"name": ""}))
            .await
            .fails(400, needle);
    }
    service
        .post_raw("list_jobs", "{\"x\": 1}")
        .await
        .fails(400, "unknown field `x`");
    service.post_raw("list_jobs", "").await.ok();
    service
        .post(
            "job_skip_binlog",
            json!({"name": "keep", "skip_by": "silence"}),
        )
        .await
        .fails(400, "needs skip_commit_seq");
    service
        .post(
            "job_skip_binlog",
            json!({"name": "keep", "skip_by": "later"}),
        )
        .await
        .fails(400, "skip_by \"later\"");
    service
        .post(
            "job_skip_binlog",
            json!({"name": "keep", "skip_by": "silence", "skip_commit_seq": -1}),
        )
        .await
        .fails(400, "skip_commit_seq");
    // Nothing above touched the job.
    assert_eq!(job_names(&service).await, vec!["keep"]);
    assert_eq!(job_status(&service, "keep").await.0, "running");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ccr_field_errors_name_the_field() {
    let service = Service::fresh().await;
    let base = table_job("fields");
    type Mutation = fn(&mut serde_json::Value);
    let cases: Vec<(Mutation, &str)> = vec![
        (|s| s["name"] = json!("bad name"), "may only contain"),
        (
            |s| s["src"]["port"] = json!(0),
            "port 0 is not a port number",
        ),
        (
            |s| s["src"]["port"] = json!("http"),
            "port \"http\" is not a port number",
        ),
        (
            |s| s["dest"]["port"] = json!([1]),
            "port must be a number or a string",
        ),
        (
            |s| s["dest"]["table"] = json!(null),
            "src.table is set but dest.table is not",
        ),
        (
            |s| s["src"]["table"] = json!(""),
            "dest.table is set but src.table is not",
        ),
        (
            |s| s["src"]["database"] = json!(""),
            "src.database is empty",
        ),
        (
            |s| {
                s["src"]
                    .as_object_mut()
                    .unwrap()
                    .remove("host")
                    .map(|_| ())
                    .unwrap()
            },
            "missing field `host`",
        ),
        (
            |s| s["dest"]["user"] = json!(7),
            "invalid type: integer `7`",
        ),
        (
            |s| s["dest"]["thrift_port"] = json!(9020),
            "unknown field `thrift_port`",
        ),
        (
            |s| s["allow_table_exists"] = json!("yes"),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            |s| s["on_binlog_purged"] = json!("ignore"),
            "unknown variant `ignore`, expected `fullsync` or `stop`",
        ),
    ];
    for (mutate, needle) in cases {
        let mut spec = base.clone();
        mutate(&mut spec);
        service.post("create_ccr", spec).await.fails(400, needle);
    }
    assert!(job_names(&service).await.is_empty());
    // A port given as a string is accepted, as Doris clients send it.
    let mut spec = base.clone();
    spec["src"]["port"] = json!(spec["src"]["port"].to_string());
    service.post("create_ccr", spec).await.ok();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_level_errors() {
    let service = Service::fresh().await;
    service
        .post("no_such_op", json!({}))
        .await
        .fails(404, "unknown operation /no_such_op");
    service
        .post("a/b", json!({}))
        .await
        .fails(404, "unknown operation");
    service
        .get("pause")
        .await
        .fails(405, "/pause answers POST only");
    let big = format!(
        "{{\"name\": \"{}\"}}",
        "x".repeat(ccr_syncer::api::MAX_BODY_BYTES)
    );
    service
        .post_raw("create_ccr", big)
        .await
        .fails(413, "larger than 1048576 bytes");
    // A body streamed without Content-Length is limited too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    service
        .post_raw("list_jobs", stream)
        .await
        .fails(413, "larger than");
    service.stop().await;
}
