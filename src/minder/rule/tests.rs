use super::*;

const N: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn settings() -> Settings {
    Settings {
        primary_dc: "dc1".into(),
        confirm_ms: 1000,
        hold_ms: 30_000,
        dcs: N
            .iter()
            .map(|n| {
                let dc = if *n == "n1" || *n == "n2" {
                    "dc1"
                } else {
                    "dc2"
                };
                (n.to_string(), dc.to_string())
            })
            .collect(),
    }
}

fn report(status: &str, members: &[&str], committed: i64) -> Seen {
    Seen::Reported(NodeReport {
        running: true,
        cluster_status: status.into(),
        local_state: if status == "Primary" {
            "Synced"
        } else {
            "Initialized"
        }
        .into(),
        cluster_size: members.len() as u64,
        last_committed: committed,
        members: members.iter().map(|m| m.to_string()).collect(),
        ..NodeReport::default()
    })
}

fn down() -> Seen {
    Seen::Reported(NodeReport {
        running: false,
        cluster_status: "Disconnected".into(),
        ..NodeReport::default()
    })
}

fn nodes(seen: [Seen; 4]) -> BTreeMap<String, Seen> {
    N.iter().map(|n| n.to_string()).zip(seen).collect()
}

fn split(committed: [i64; 4]) -> BTreeMap<String, Seen> {
    nodes([
        report("non-Primary", &["n1", "n2"], committed[0]),
        report("non-Primary", &["n1", "n2"], committed[1]),
        report("non-Primary", &["n3", "n4"], committed[2]),
        report("non-Primary", &["n3", "n4"], committed[3]),
    ])
}

/// A memory after a healthy cluster of four, Primary until `seen`.
fn memory(seen: i64) -> Memory {
    Memory {
        last_primary_view: N.iter().map(|n| n.to_string()).collect(),
        primary_seen_at: Some(seen),
        promotions: Vec::new(),
        membership: BTreeMap::new(),
    }
}

fn promoted(component: &[&str], at: i64) -> Memory {
    let mut m = memory(0);
    m.promotions.push(Promotion {
        epoch: 1,
        component: component.iter().map(|c| c.to_string()).collect(),
        node: component[0].into(),
        at,
        reason: "test".into(),
        forced: false,
    });
    m
}

/// `memory` with every reported node's membership unchanged since `at`.
fn settled(mut memory: Memory, nodes: &BTreeMap<String, Seen>, at: i64) -> Memory {
    for (name, seen) in nodes {
        if let Some(r) = seen.report() {
            memory
                .membership
                .insert(name.clone(), (Membership::of(r), at));
        }
    }
    memory
}

fn promotes(d: &Decision) -> Option<(&str, Vec<&str>)> {
    match d {
        Decision::Promote {
            node, component, ..
        } => Some((
            node.as_str(),
            component.iter().map(String::as_str).collect(),
        )),
        _ => None,
    }
}

/// The decisions of the scenarios, one case each.
#[test]
fn scenarios() {
    let s = settings();
    let now = 100_000;
    type Case = (
        &'static str,
        Memory,
        BTreeMap<String, Seen>,
        Option<(&'static str, Vec<&'static str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "a Primary cluster is never touched",
            memory(now),
            nodes([
                report("Primary", &N, 5),
                report("Primary", &N, 5),
                report("Primary", &N, 5),
                report("Primary", &N, 5),
            ]),
            None,
        ),
        (
            "a cut between the DCs: the primary DC's half, its newest node",
            memory(now - 2000),
            split([10, 11, 10, 10]),
            Some(("n2", vec!["n1", "n2"])),
        ),
        (
            "not before confirm_s without a Primary report",
            memory(now - 500),
            split([10, 10, 10, 10]),
            None,
        ),
        (
            "a half behind the other is not promoted, the other is",
            memory(now - 2000),
            split([10, 10, 12, 12]),
            Some(("n3", vec!["n3", "n4"])),
        ),
        (
            "the arbitrator cut from one DC while the cluster is whole: no decision",
            memory(now),
            nodes([
                report("Primary", &N, 5),
                report("Primary", &N, 5),
                Seen::Unreachable,
                Seen::Unreachable,
            ]),
            None,
        ),
        (
            "one half's stale Primary report: never touched",
            memory(now),
            nodes([
                report("non-Primary", &["n1", "n2"], 9),
                report("non-Primary", &["n1", "n2"], 9),
                report("Primary", &N, 9),
                Seen::Unreachable,
            ]),
            None,
        ),
        (
            "after promoting dc1, dc1 out of reach: dc2 is never promoted",
            promoted(&["n1", "n2"], now - 60_000),
            nodes([
                Seen::Unreachable,
                Seen::Unreachable,
                report("non-Primary", &["n3", "n4"], 20),
                report("non-Primary", &["n3", "n4"], 20),
            ]),
            None,
        ),
        (
            "after promoting dc1, one dc1 node known down, one unreachable: still not",
            promoted(&["n1", "n2"], now - 60_000),
            nodes([
                down(),
                Seen::Unreachable,
                report("non-Primary", &["n3", "n4"], 20),
                report("non-Primary", &["n3", "n4"], 20),
            ]),
            None,
        ),
        (
            "the whole promoted DC known down: the other is promoted",
            promoted(&["n1", "n2"], now - 60_000),
            nodes([
                down(),
                down(),
                report("non-Primary", &["n3", "n4"], 20),
                report("non-Primary", &["n3", "n4"], 20),
            ]),
            Some(("n3", vec!["n3", "n4"])),
        ),
        (
            "one promotion per hold_s",
            promoted(&["n1", "n2"], now - 10_000),
            nodes([
                down(),
                down(),
                report("non-Primary", &["n3", "n4"], 20),
                report("non-Primary", &["n3", "n4"], 20),
            ]),
            None,
        ),
        (
            "a lone node of four: not a majority's rest",
            memory(now - 2000),
            nodes([
                report("non-Primary", &["n1"], 10),
                Seen::Unreachable,
                Seen::Unreachable,
                Seen::Unreachable,
            ]),
            None,
        ),
        (
            "a lone node whose every peer is known down",
            memory(now - 2000),
            nodes([report("non-Primary", &["n1"], 10), down(), down(), down()]),
            Some(("n1", vec!["n1"])),
        ),
        (
            "no memory of a Primary view: only with the rest known down",
            Memory::default(),
            split([10, 10, 10, 10]),
            None,
        ),
    ];
    for (what, memory, nodes, want) in cases {
        let memory = settled(memory, &nodes, 0);
        let d = decide(&s, &memory, &nodes, now, None);
        assert_eq!(promotes(&d), want, "{what}: {d:?}");
    }
}

#[test]
fn the_view_is_what_a_primary_node_reports() {
    let mut m = memory(0);
    // One half's node still reports Primary with all four; the other half
    // already reports its own two: the view stays four.
    let seen = nodes([
        report("Primary", &N, 5),
        report("non-Primary", &["n2"], 5),
        Seen::Unreachable,
        Seen::Unreachable,
    ]);
    observe(&mut m, &seen, 10);
    assert_eq!(m.last_primary_view.len(), 4);
    assert_eq!(m.primary_seen_at, Some(10));
    // A Primary half of two (after a promotion) is the view from then on.
    observe(
        &mut m,
        &nodes([
            report("Primary", &["n1", "n2"], 6),
            report("Primary", &["n1", "n2"], 6),
            Seen::Unreachable,
            Seen::Unreachable,
        ]),
        20,
    );
    assert_eq!(m.last_primary_view, vec!["n1", "n2"]);
    // No Primary report: nothing changes.
    observe(&mut m, &split([1, 1, 1, 1]), 30);
    assert_eq!(m.primary_seen_at, Some(20));
}

/// The property that keeps two Primaries from existing: once a component
/// is promoted, no component disjoint from it is promoted unless every one
/// of its members is known down — whatever the others report.
#[test]
fn never_two_primaries() {
    let s = settings();
    let states = |committed: i64| {
        vec![
            Seen::Unreachable,
            down(),
            report("non-Primary", &["n1", "n2"], committed),
            report("non-Primary", &["n1"], committed),
        ]
    };
    let mut checked = 0;
    for a in states(30) {
        for b in states(30) {
            let seen = nodes([
                a.clone(),
                b.clone(),
                report("non-Primary", &["n3", "n4"], 40),
                report("non-Primary", &["n3", "n4"], 40),
            ]);
            let m = settled(promoted(&["n1", "n2"], 0), &seen, 0);
            let d = decide(&s, &m, &seen, 1_000_000, None);
            let both_down = a == down() && b == down();
            if let Some((_, component)) = promotes(&d) {
                let disjoint = !component.contains(&"n1") && !component.contains(&"n2");
                assert!(!disjoint || both_down, "{a:?} {b:?}: {d:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16);
}

#[test]
fn force_primary_overrides_all_but_a_primary() {
    let s = settings();
    let m = promoted(&["n1", "n2"], 0);
    let seen = nodes([
        Seen::Unreachable,
        Seen::Unreachable,
        report("non-Primary", &["n3", "n4"], 20),
        report("non-Primary", &["n3", "n4"], 20),
    ]);
    // Even a membership that just changed: the operator overrides.
    let d = decide(&s, &m, &seen, 1_000_000, Some("n4"));
    assert_eq!(promotes(&d), Some(("n4", vec!["n3", "n4"])));
    let healthy = nodes([
        report("Primary", &N, 5),
        report("Primary", &N, 5),
        report("Primary", &N, 5),
        report("Primary", &N, 5),
    ]);
    assert!(matches!(
        decide(&s, &m, &healthy, 1_000_000, Some("n4")),
        Decision::Healthy { .. }
    ));
}

#[test]
fn the_writer_stays_while_healthy() {
    let s = settings();
    let healthy = nodes([
        report("Primary", &N, 5),
        report("Primary", &N, 5),
        report("Primary", &N, 5),
        report("Primary", &N, 5),
    ]);
    let none = BTreeSet::new();
    // No writer yet: the primary DC's first.
    assert_eq!(writer(&s, None, &healthy, &none).as_deref(), Some("n1"));
    // No failback: n3 stays the writer while healthy.
    assert_eq!(
        writer(&s, Some("n3"), &healthy, &none).as_deref(),
        Some("n3")
    );
    // A drained writer hands over, preferring the primary DC.
    let drained: BTreeSet<String> = ["n3".to_string()].into();
    assert_eq!(
        writer(&s, Some("n3"), &healthy, &drained).as_deref(),
        Some("n1")
    );
    // Right after a promotion the writer's own report may lag the view:
    // it stays the writer.
    let lagging = nodes([
        report("non-Primary", &["n1", "n2"], 5),
        report("Primary", &["n1", "n2"], 5),
        Seen::Unreachable,
        Seen::Unreachable,
    ]);
    assert_eq!(
        writer(&s, Some("n1"), &lagging, &none).as_deref(),
        Some("n1")
    );
    // A donor hands over within its own DC (no failback by way of a state
    // transfer); to the primary DC when its DC has no other fit node.
    let mut donor = healthy.clone();
    if let Some(Seen::Reported(r)) = donor.get_mut("n3") {
        r.local_state = "Donor/Desynced".into();
    }
    assert_eq!(writer(&s, Some("n3"), &donor, &none).as_deref(), Some("n4"));
    if let Some(Seen::Reported(r)) = donor.get_mut("n4") {
        r.local_state = "Joining".into();
    }
    assert_eq!(writer(&s, Some("n3"), &donor, &none).as_deref(), Some("n1"));
    // No Primary component: no writer.
    assert_eq!(writer(&s, Some("n1"), &split([1, 1, 1, 1]), &none), None);
}

/// While a cut heals, Galera's reconfiguration passes through short
/// memberships: a lone node of the last Primary view's half (which holds
/// half of that view) is not promoted until the memberships have stayed
/// the same for `confirm_s`.
#[test]
fn a_moving_membership_is_not_promoted() {
    let s = settings();
    // dc1 was promoted long ago and is the last Primary view.
    let mut m = promoted(&["n1", "n2"], 0);
    m.last_primary_view = vec!["n1".into(), "n2".into()];
    m.primary_seen_at = Some(10_000);
    let healing = nodes([
        report("non-Primary", &["n1"], 50),
        report("non-Primary", &["n2", "n3", "n4"], 50),
        report("non-Primary", &["n2", "n3", "n4"], 50),
        report("non-Primary", &["n2", "n3", "n4"], 50),
    ]);
    let mut now = 100_000;
    observe(&mut m, &healing, now);
    now += 500;
    observe(&mut m, &healing, now);
    let d = decide(&s, &m, &healing, now, None);
    assert!(
        matches!(&d, Decision::Wait(why) if why.contains("membership changed lately")),
        "{d:?}"
    );
    // It moves again before confirm_s: still no promotion.
    let moved = nodes([
        report("non-Primary", &["n1", "n2"], 50),
        report("non-Primary", &["n1", "n2"], 50),
        report("non-Primary", &["n3", "n4"], 50),
        report("non-Primary", &["n3", "n4"], 50),
    ]);
    now += 800;
    observe(&mut m, &moved, now);
    now += 800;
    observe(&mut m, &moved, now);
    assert_eq!(promotes(&decide(&s, &m, &moved, now, None)), None);
    // Settled for confirm_s: the primary DC's half is promoted.
    now += 300;
    observe(&mut m, &moved, now);
    assert_eq!(
        promotes(&decide(&s, &m, &moved, now, None)),
        Some(("n1", vec!["n1", "n2"]))
    );
    // A node never observed (a restarted arbitrator's first round) waits.
    let fresh = memory(0);
    assert_eq!(promotes(&decide(&s, &fresh, &moved, now, None)), None);
}
