//! An instance's CPU limit (`update_instance_cgroup`, and `cpu_cores` at
//! install): its `mariadbd` in a cgroup of its own, on cgroup v2 (`cpu.max`
//! for a hard quota, `cpu.weight` for a soft share) or on v1's `cpu`
//! controller (`cpu.cfs_quota_us`, `cpu.shares`), whichever the machine
//! has. The limit is kept in the agent's instance list, applied whenever
//! the instance starts and again by a pullup round that finds it out of
//! its cgroup, so it holds across instance and agent restarts. A machine without a writable hierarchy
//! refuses, saying so.

use crate::protocol::{Cgroup, CgroupMode};
use std::path::{Path, PathBuf};

/// The CFS period both versions use, in µs.
const PERIOD_US: u64 = 100_000;

/// The hierarchy this machine has.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hierarchy {
    V2(PathBuf),
    V1(PathBuf),
}

fn detect() -> Result<Hierarchy, String> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").is_file() {
        return Ok(Hierarchy::V2(root.to_path_buf()));
    }
    for v1 in ["cpu", "cpu,cpuacct"] {
        let dir = root.join(v1);
        if dir.join("cpu.cfs_quota_us").is_file() {
            return Ok(Hierarchy::V1(dir));
        }
    }
    Err(
        "this machine has no cgroup hierarchy with the cpu controller (cgroup v2 at \
         /sys/fs/cgroup, or v1's cpu controller at /sys/fs/cgroup/cpu): the instance's CPU \
         cannot be limited here"
            .into(),
    )
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| {
        format!(
            "cannot write {value:?} to {} ({e}): the agent needs a writable cgroup hierarchy \
             (run it as root, or delegate the cgroup to its user)",
            path.display()
        )
    })
}

/// The instance's own cgroup directory (`host` tells apart agents that
/// share one machine).
fn dir_of(h: &Hierarchy, host: &str, port: u16) -> PathBuf {
    let name = format!("mysql-{host}-{port}");
    match h {
        Hierarchy::V2(root) | Hierarchy::V1(root) => root.join("ccr-syncer").join(name),
    }
}

/// Makes sure the instance's cgroup exists with `limit` and holds `pid`
/// (when it runs); its path.
pub fn apply(host: &str, port: u16, pid: Option<i32>, limit: &Cgroup) -> Result<String, String> {
    let h = detect()?;
    let dir = dir_of(&h, host, port);
    if let Hierarchy::V2(root) = &h {
        // The cpu controller handed down to our subtree.
        let parent = root.join("ccr-syncer");
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let enabled = |d: &Path| {
            std::fs::read_to_string(d.join("cgroup.subtree_control"))
                .is_ok_and(|t| t.split_whitespace().any(|c| c == "cpu"))
        };
        for d in [root.as_path(), parent.as_path()] {
            if !enabled(d) {
                write(&d.join("cgroup.subtree_control"), "+cpu")?;
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot create the cgroup {} ({e}): the agent needs a writable cgroup hierarchy",
            dir.display()
        )
    })?;
    let cores = limit.cpu_cores.max(1) as u64;
    match (&h, limit.mode) {
        (Hierarchy::V2(_), CgroupMode::Quota) => {
            write(
                &dir.join("cpu.max"),
                &format!("{} {PERIOD_US}", cores * PERIOD_US),
            )?;
            write(&dir.join("cpu.weight"), "100")?;
        }
        (Hierarchy::V2(_), CgroupMode::Share) => {
            write(&dir.join("cpu.max"), &format!("max {PERIOD_US}"))?;
            write(
                &dir.join("cpu.weight"),
                &(cores * 100).min(10_000).to_string(),
            )?;
        }
        (Hierarchy::V1(_), CgroupMode::Quota) => {
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(
                &dir.join("cpu.cfs_quota_us"),
                &(cores * PERIOD_US).to_string(),
            )?;
            write(&dir.join("cpu.shares"), "1024")?;
        }
        (Hierarchy::V1(_), CgroupMode::Share) => {
            write(&dir.join("cpu.cfs_quota_us"), "-1")?;
            write(&dir.join("cpu.shares"), &(cores * 1024).to_string())?;
        }
    }
    if let Some(pid) = pid {
        if !holds(&dir, pid) {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
    }
    Ok(dir.display().to_string())
}

/// What auto pullup checks every round: nothing is written while the
/// instance's cgroup exists and holds `pid`; else it is applied again
/// (a restarted instance, a cgroup removed behind the agent's back).
pub fn keep(host: &str, port: u16, pid: i32, limit: &Cgroup) -> Result<(), String> {
    if let Ok(h) = detect() {
        if holds(&dir_of(&h, host, port), pid) {
            return Ok(());
        }
    }
    apply(host, port, Some(pid), limit).map(|_| ())
}

/// Takes the instance out of its cgroup (back to the root's) and removes
/// the cgroup: no limit.
pub fn remove(host: &str, port: u16, pid: Option<i32>) -> Result<(), String> {
    let Ok(h) = detect() else {
        return Ok(());
    };
    let dir = dir_of(&h, host, port);
    if !dir.is_dir() {
        return Ok(());
    }
    if let Some(pid) = pid {
        let root = match &h {
            Hierarchy::V2(r) | Hierarchy::V1(r) => r.clone(),
        };
        write(&root.join("cgroup.procs"), &pid.to_string())?;
    }
    std::fs::remove_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Whether the cgroup `dir` holds process `pid`.
fn holds(dir: &Path, pid: i32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_has_a_cgroup_of_its_own() {
        let h = Hierarchy::V1("/sys/fs/cgroup/cpu".into());
        assert_eq!(
            dir_of(&h, "127.0.0.11", 46001),
            PathBuf::from("/sys/fs/cgroup/cpu/ccr-syncer/mysql-127.0.0.11-46001")
        );
        let h = Hierarchy::V2("/sys/fs/cgroup".into());
        assert_ne!(dir_of(&h, "a", 1), dir_of(&h, "b", 1));
    }
}
