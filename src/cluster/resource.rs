//! What a job holds, and which jobs may run side by side. Pure.
//!
//! A job declares its resources when it is accepted (stored with it as
//! text). Two jobs conflict when one of the first's resources overlaps one
//! of the second's: the same machine, instance, cluster, shard or table; a
//! machine and an instance on it; a cluster and a shard or table of it; the
//! group and the group. Of two conflicting unfinished jobs the one
//! accepted first runs and the other waits, so jobs on one resource run in
//! the order accepted and never interleave, while jobs on disjoint
//! resources run at once.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The group of syncers (raft_mission).
    Group,
    Machine(String),
    /// `(machine, port)`.
    Instance(String, i64),
    Cluster(String),
    /// `(cluster, shard)`.
    Shard(String, i64),
    /// `(cluster, db.table)`.
    Table(String, String),
}

impl Resource {
    /// Whether jobs holding `self` and `other` must not interleave.
    pub fn overlaps(&self, other: &Resource) -> bool {
        use Resource::*;
        match (self, other) {
            (Group, Group) => true,
            (Machine(a), Machine(b)) => a == b,
            (Machine(m), Instance(h, _)) | (Instance(h, _), Machine(m)) => m == h,
            (Instance(a, p), Instance(b, q)) => a == b && p == q,
            (Cluster(a), Cluster(b)) => a == b,
            (Cluster(c), Shard(d, _))
            | (Shard(d, _), Cluster(c))
            | (Cluster(c), Table(d, _))
            | (Table(d, _), Cluster(c)) => c == d,
            (Shard(a, s), Shard(b, t)) => a == b && s == t,
            (Table(a, s), Table(b, t)) => a == b && s == t,
            _ => false,
        }
    }

    /// Reads one as [`fmt::Display`] writes it.
    pub fn parse(text: &str) -> Option<Resource> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        Some(match kind {
            "group" => Resource::Group,
            "machine" => Resource::Machine(rest.to_string()),
            "cluster" => Resource::Cluster(rest.to_string()),
            "instance" => {
                let (h, p) = rest.rsplit_once(':')?;
                Resource::Instance(h.to_string(), p.parse().ok()?)
            }
            "shard" => {
                let (c, s) = rest.split_once(':')?;
                Resource::Shard(c.to_string(), s.parse().ok()?)
            }
            "table" => {
                let (c, t) = rest.split_once(':')?;
                Resource::Table(c.to_string(), t.to_string())
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Group => write!(f, "group"),
            Resource::Machine(h) => write!(f, "machine:{h}"),
            Resource::Instance(h, p) => write!(f, "instance:{h}:{p}"),
            Resource::Cluster(c) => write!(f, "cluster:{c}"),
            Resource::Shard(c, s) => write!(f, "shard:{c}:{s}"),
            Resource::Table(c, t) => write!(f, "table:{c}:{t}"),
        }
    }
}

/// Resources as stored: comma-separated.
pub fn encode(list: &[Resource]) -> String {
    list.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Resources as stored; an unreadable entry is kept whole as a machine
/// name, so that it still conflicts with itself rather than with nothing.
pub fn decode(text: &str) -> Vec<Resource> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Resource::parse(s).unwrap_or_else(|| Resource::Machine(s.to_string())))
        .collect()
}

/// The instances the jobs `resources` (as stored) hold.
pub fn held_instances<'a>(resources: impl Iterator<Item = &'a str>) -> Vec<(String, i64)> {
    resources
        .flat_map(decode)
        .filter_map(|r| match r {
            Resource::Instance(h, p) => Some((h, p)),
            _ => None,
        })
        .collect()
}

/// Why a job waits: the resource and the job that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub resource: Resource,
    pub holder: String,
}

/// For each unfinished job (oldest first: `(job_id, resources)`), the
/// first older job it conflicts with, if any: `None` means it may run.
pub fn schedule(jobs: &[(String, Vec<Resource>)]) -> Vec<(String, Option<Waiting>)> {
    jobs.iter()
        .enumerate()
        .map(|(i, (id, mine))| {
            let blocker = jobs[..i].iter().find_map(|(other, theirs)| {
                mine.iter()
                    .find(|r| theirs.iter().any(|t| t.overlaps(r)))
                    .map(|r| Waiting {
                        resource: r.clone(),
                        holder: other.clone(),
                    })
            });
            (id.clone(), blocker)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Resource::*;
    use super::*;

    fn m(h: &str) -> Resource {
        Machine(h.into())
    }
    fn i(h: &str, p: i64) -> Resource {
        Instance(h.into(), p)
    }
    fn c(id: &str) -> Resource {
        Cluster(id.into())
    }

    #[test]
    fn overlaps_as_a_table_of_cases() {
        for (a, b, overlap) in [
            (Group, Group, true),
            (m("h1"), m("h1"), true),
            (m("h1"), m("h2"), false),
            (m("h1"), i("h1", 46000), true),
            (i("h1", 46000), m("h1"), true),
            (m("h2"), i("h1", 46000), false),
            (i("h1", 46000), i("h1", 46000), true),
            (i("h1", 46000), i("h1", 46001), false),
            (c("1"), c("1"), true),
            (c("1"), c("2"), false),
            (c("1"), Shard("1".into(), 2), true),
            (Shard("1".into(), 2), Shard("1".into(), 3), false),
            (Shard("1".into(), 2), Shard("1".into(), 2), true),
            (c("1"), Table("1".into(), "d.t".into()), true),
            (Table("2".into(), "d.t".into()), c("1"), false),
            (Group, m("h1"), false),
            (c("1"), m("h1"), false),
        ] {
            assert_eq!(a.overlaps(&b), overlap, "{a} / {b}");
            assert_eq!(Resource::parse(&a.to_string()), Some(a.clone()));
        }
        assert_eq!(
            decode("cluster:3,instance:127.0.0.1:46000,machine:h"),
            vec![c("3"), i("127.0.0.1", 46000), m("h")]
        );
        assert_eq!(decode(&encode(&[Group, c("9")])), vec![Group, c("9")]);
    }

    #[test]
    fn jobs_wait_for_the_older_job_holding_their_resource() {
        let jobs = vec![
            ("1".to_string(), vec![c("1"), i("h1", 46000)]),
            ("2".to_string(), vec![c("2"), i("h2", 46000)]),
            ("3".to_string(), vec![m("h1")]),
            ("4".to_string(), vec![c("1")]),
            ("5".to_string(), vec![Group]),
            ("6".to_string(), vec![m("h3")]),
            ("7".to_string(), vec![m("h3")]),
        ];
        let s = schedule(&jobs);
        let w = |r: Resource, h: &str| {
            Some(Waiting {
                resource: r,
                holder: h.into(),
            })
        };
        assert_eq!(
            s,
            vec![
                ("1".into(), None),
                ("2".into(), None),
                ("3".into(), w(m("h1"), "1")),
                ("4".into(), w(c("1"), "1")),
                ("5".into(), None),
                ("6".into(), None),
                ("7".into(), w(m("h3"), "6")),
            ]
        );
    }
}
