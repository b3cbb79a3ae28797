//! The position types read what a real MariaDB reports: its GTID position and
//! the binlog coordinate of a consistent snapshot.

use crate::harness::*;
use ccr_syncer::position::{BinlogCoord, MariaGtidPos};

#[test]
fn parses_what_mariadb_reports() {
    let db = unique("pos");
    let s = source();
    s.admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY)"
    ));
    let before = MariaGtidPos::parse(&s.admin("SELECT @@gtid_binlog_pos")).unwrap();
    s.admin(&format!(
        "INSERT INTO {db}.t VALUES (1); INSERT INTO {db}.t VALUES (2)"
    ));
    let after = MariaGtidPos::parse(&s.admin("SELECT @@gtid_binlog_pos")).unwrap();
    assert!(
        after.commit_seq() >= before.commit_seq() + 2,
        "{before} -> {after}"
    );

    // A consistent snapshot's coordinate maps to the GTID position at it.
    let out = s.admin(
        "START TRANSACTION WITH CONSISTENT SNAPSHOT; \
         SELECT CONCAT(MAX(IF(VARIABLE_NAME = 'BINLOG_SNAPSHOT_FILE', VARIABLE_VALUE, NULL)), ':', \
                       MAX(IF(VARIABLE_NAME = 'BINLOG_SNAPSHOT_POSITION', VARIABLE_VALUE, NULL))) \
         FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME LIKE 'BINLOG_SNAPSHOT_%'; COMMIT",
    );
    let coord = BinlogCoord::parse(&out).unwrap();
    assert!(coord.file_index().is_some(), "{coord}");
    let gtid = s.admin(&format!(
        "SELECT BINLOG_GTID_POS('{}', {})",
        coord.file, coord.pos
    ));
    // Other tests write to the shared source meanwhile: the snapshot is at or
    // after the position read before it.
    let at_snapshot = MariaGtidPos::parse(&gtid).unwrap();
    assert!(
        at_snapshot.commit_seq() >= after.commit_seq(),
        "{after} -> {at_snapshot}"
    );
}
