//! A group of one for the tests of the modules above the group (the
//! cluster manager's engine), on a real store.

use super::*;

impl Group {
    /// A group of one on `store`, for the cluster manager's own tests.
    pub async fn alone(store: Arc<dyn MetaStore>) -> Arc<Group> {
        let metrics = Arc::new(Metrics::new());
        let settings = crate::job::WorkSettings {
            connect_timeout: Duration::from_secs(5),
            full_sync: Default::default(),
            apply_connections: 1,
            tls_minimum: Default::default(),
            stall_secs: 60,
            verify: Default::default(),
            failpoint: None,
        };
        let manager = JobManager::new(
            store.clone(),
            metrics.clone(),
            settings,
            Arc::new(crate::job::Switches::default()),
        );
        let group_settings = GroupSettings {
            member_id: "127.0.0.1:1".into(),
            address: "http://127.0.0.1:1".into(),
            member_type: crate::store::group::NORMAL,
            lease: Duration::from_secs(9),
            heartbeat: Duration::from_secs(3),
        };
        Group::join(store, manager, metrics, group_settings)
            .await
            .expect("a group of one joins")
    }
}
