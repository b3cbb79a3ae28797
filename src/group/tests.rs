use super::*;

#[test]
fn api_addresses() {
    assert_eq!(
        api_address("10.0.0.1:9190").unwrap(),
        "http://10.0.0.1:9190"
    );
    assert_eq!(
        api_address("https://db.example:9443/").unwrap(),
        "https://db.example:9443"
    );
    for bad in ["10.0.0.1", ":9190", "h:0", "ftp://h:1", "h:99999", "a/b:1"] {
        assert!(api_address(bad).is_err(), "{bad}");
    }
}

#[test]
fn member_states() {
    let lease = Duration::from_secs(8);
    let m = |state: &str, heartbeat_at| MemberRow {
        id: "a".into(),
        address: "http://a:1".into(),
        member_type: NORMAL,
        state: state.into(),
        incarnation: String::new(),
        heartbeat_at,
        joined_at: 0,
    };
    assert_eq!(member_state(&m("normal", 10_000), 12_000, lease), "alive");
    assert_eq!(member_state(&m("normal", 1_000), 12_000, lease), "dead");
    assert_eq!(member_state(&m("normal", 0), 12_000, lease), "dead");
    assert_eq!(
        member_state(&m("draining", 11_000), 12_000, lease),
        "draining"
    );
}
