//! The job types of the cluster manager, one file each, and the one
//! registry that lists them. Adding a job type: a file here implementing
//! [`super::kind::Kind`], and one line in [`registry`].

mod add_comps;
mod add_nodes;
mod add_shards;
mod cluster_restore;
mod control_instance;
mod create_cluster;
mod create_machine;
mod delete_cluster;
mod delete_comp;
mod delete_machine;
mod delete_node;
mod delete_shard;
mod expand_cluster;
pub mod failover;
mod logical_backup;
mod logical_restore;
mod manual_backup_cluster;
mod manual_switch;
mod raft_mission;
mod rebuild_node;
mod repartition_tables;
mod set_machine;
mod update_instance_cgroup;

use super::kind::{erased, AnyKind};
use std::sync::Arc;

/// Every asynchronous job type this version runs.
pub fn registry() -> Vec<Arc<dyn AnyKind>> {
    vec![
        erased(create_machine::CreateMachine),
        erased(delete_machine::DeleteMachine),
        erased(set_machine::SetMachine),
        erased(create_cluster::CreateCluster),
        erased(add_shards::AddShards),
        erased(delete_shard::DeleteShard("delete_shard")),
        erased(delete_shard::DeleteShard("delete_shards")),
        erased(delete_cluster::DeleteCluster),
        erased(delete_node::DeleteNode("delete_node")),
        erased(delete_node::DeleteNode("delete_nodes")),
        erased(raft_mission::RaftMission),
        erased(add_nodes::AddNodes),
        erased(rebuild_node::RebuildNode),
        erased(update_instance_cgroup::UpdateInstanceCgroup),
        erased(failover::Failover),
        erased(manual_switch::ManualSwitch),
        erased(control_instance::ControlInstance),
        erased(manual_backup_cluster::ManualBackupCluster),
        erased(cluster_restore::ClusterRestore),
        erased(logical_backup::LogicalBackup),
        erased(logical_restore::LogicalRestore),
        erased(add_comps::AddComps),
        erased(delete_comp::DeleteComp),
        erased(expand_cluster::ExpandCluster),
        erased(repartition_tables::RepartitionTables("repartition_tables")),
        erased(repartition_tables::RepartitionTables("table_repartition")),
    ]
}
