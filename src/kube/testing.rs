//! A recording fake of [`ClusterApi`] for tests of the agent: it keeps the label and the
//! master endpoints in memory, follows the same rules as the real adapter (no change when
//! already right, never an older epoch over a newer one), records every call in order, and
//! can be told to fail the next calls.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use super::{BoxFuture, ClusterApi, KubeError, PodInfo, PodSummary};
use crate::model::RedisRole;

/// One call the agent made, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    LbAdvertiseHost,
    EnsureRoleLabel(Option<RedisRole>),
    EnsureMasterEndpoints { epoch: u64, ip: String, port: u16 },
    ListPods,
}

/// What the master endpoints point at: `(epoch, ip, port)`.
pub type MasterEndpoints = (u64, String, u16);

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    label: Option<RedisRole>,
    label_writes: u32,
    endpoints: Option<MasterEndpoints>,
    endpoint_writes: u32,
    lb_host: Option<String>,
    pods: Vec<PodSummary>,
    failures: VecDeque<KubeError>,
}

pub struct FakeCluster {
    pod: PodInfo,
    state: Mutex<State>,
}

impl FakeCluster {
    pub fn new(pod: PodInfo) -> FakeCluster {
        FakeCluster {
            pod,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next call (of any kind) fails with `error`, after being recorded.
    pub fn fail_next(&self, error: KubeError) {
        self.state().failures.push_back(error);
    }

    /// Start with this label on the pod, as if a previous run had set it.
    pub fn set_label(&self, label: Option<RedisRole>) {
        self.state().label = label;
    }

    /// What [`ClusterApi::lb_advertise_host`] answers.
    pub fn set_lb_host(&self, host: Option<String>) {
        self.state().lb_host = host;
    }

    /// What [`ClusterApi::list_pods`] answers.
    pub fn set_pods(&self, pods: Vec<PodSummary>) {
        self.state().pods = pods;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn label(&self) -> Option<RedisRole> {
        self.state().label
    }

    /// How many times the label actually changed.
    pub fn label_writes(&self) -> u32 {
        self.state().label_writes
    }

    pub fn endpoints(&self) -> Option<MasterEndpoints> {
        self.state().endpoints.clone()
    }

    /// How many times the endpoints actually changed.
    pub fn endpoint_writes(&self) -> u32 {
        self.state().endpoint_writes
    }

    fn record(&self, call: Call) -> Result<MutexGuard<'_, State>, KubeError> {
        let mut state = self.state();
        state.calls.push(call);
        match state.failures.pop_front() {
            Some(error) => Err(error),
            None => Ok(state),
        }
    }
}

impl ClusterApi for FakeCluster {
    fn pod_info(&self) -> &PodInfo {
        &self.pod
    }

    fn lb_advertise_host(&self) -> BoxFuture<'_, Result<Option<String>, KubeError>> {
        let result = self
            .record(Call::LbAdvertiseHost)
            .map(|state| state.lb_host.clone());
        Box::pin(async move { result })
    }

    fn ensure_role_label(
        &self,
        desired: Option<RedisRole>,
    ) -> BoxFuture<'_, Result<(), KubeError>> {
        let result = self
            .record(Call::EnsureRoleLabel(desired))
            .map(|mut state| {
                if state.label != desired {
                    state.label = desired;
                    state.label_writes += 1;
                }
            });
        Box::pin(async move { result })
    }

    fn ensure_master_endpoints<'a>(
        &'a self,
        epoch: u64,
        master_ip: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        let call = Call::EnsureMasterEndpoints {
            epoch,
            ip: master_ip.to_string(),
            port,
        };
        let result = self.record(call).and_then(|mut state| {
            if master_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(KubeError::InvalidAddress(master_ip.to_string()));
            }
            let want = (epoch, master_ip.to_string(), port);
            let newer = state
                .endpoints
                .as_ref()
                .is_some_and(|(stored, _, _)| *stored > epoch);
            if !newer && state.endpoints.as_ref() != Some(&want) {
                state.endpoints = Some(want);
                state.endpoint_writes += 1;
            }
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn list_pods(&self) -> BoxFuture<'_, Result<Vec<PodSummary>, KubeError>> {
        let result = self.record(Call::ListPods).map(|state| state.pods.clone());
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> FakeCluster {
        FakeCluster::new(PodInfo {
            name: "redis-0".into(),
            namespace: "ns".into(),
            uid: "uid-1".into(),
            ip: "10.0.0.5".into(),
        })
    }

    #[tokio::test]
    async fn records_calls_and_applies_the_adapter_rules() {
        let k = fake();
        let api: &dyn ClusterApi = &k;
        api.ensure_role_label(Some(RedisRole::Replica))
            .await
            .expect("label");
        api.ensure_role_label(Some(RedisRole::Replica))
            .await
            .expect("same label");
        assert_eq!(k.label_writes(), 1);

        api.ensure_master_endpoints(3, "10.0.0.5", 6379)
            .await
            .expect("endpoints");
        api.ensure_master_endpoints(2, "10.0.0.6", 6379)
            .await
            .expect("older epoch is a no-op");
        assert_eq!(k.endpoints(), Some((3, "10.0.0.5".to_string(), 6379)));
        assert_eq!(k.endpoint_writes(), 1);
        assert!(matches!(
            api.ensure_master_endpoints(4, "redis-0", 6379).await,
            Err(KubeError::InvalidAddress(_))
        ));

        k.fail_next(KubeError::Api {
            op: "patch pod redis-0".into(),
            code: 500,
            reason: "InternalError".into(),
            message: "boom".into(),
        });
        let e = api
            .ensure_role_label(Some(RedisRole::Master))
            .await
            .expect_err("injected failure");
        assert_eq!(e.status_code(), Some(500));
        assert_eq!(k.label(), Some(RedisRole::Replica));
        api.ensure_role_label(Some(RedisRole::Master))
            .await
            .expect("retry");
        assert_eq!(k.label(), Some(RedisRole::Master));
        assert_eq!(k.calls().len(), 7);
        assert_eq!(
            k.calls().last(),
            Some(&Call::EnsureRoleLabel(Some(RedisRole::Master)))
        );
    }
}
