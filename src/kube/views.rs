//! The few fields of Pods and Services the adapter reads, as `kube` resources of their own.
//!
//! k8s-openapi's `Pod` and `Service` deserialize every field of the whole spec (containers,
//! volumes, probes, ...); their generated code was a large part of the agent binary, and
//! the adapter reads none of it. serde skips the fields not declared here. Writes stay
//! merge patches of the metadata, so nothing the views leave out is ever sent back.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A core/v1 Pod: its metadata, IP and conditions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub status: Option<PodStatusView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusView {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub conditions: Option<Vec<ConditionView>>,
}

/// One entry of a Pod's `status.conditions`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConditionView {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

/// A core/v1 Service: its type, selector and LoadBalancer ingress.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpecView>,
    pub status: Option<ServiceStatusView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceSpecView {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatusView {
    pub load_balancer: Option<LoadBalancerStatusView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoadBalancerStatusView {
    pub ingress: Option<Vec<IngressView>>,
}

/// One entry of `status.loadBalancer.ingress`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IngressView {
    pub ip: Option<String>,
    pub hostname: Option<String>,
}

/// A namespaced core/v1 resource named `kind`, served under `plural`.
macro_rules! core_v1_resource {
    ($view:ty, $kind:literal, $plural:literal) => {
        impl ::kube::Resource for $view {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1_resource!(PodView, "Pod", "pods");
core_v1_resource!(ServiceView, "Service", "services");

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::Resource;

    #[test]
    fn paths_match_the_core_api() {
        assert_eq!(
            PodView::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
        assert_eq!(
            ServiceView::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/services"
        );
        assert_eq!(PodView::api_version(&()), "v1");
    }

    #[test]
    fn reads_the_fields_it_names_and_skips_the_rest() -> Result<(), serde_json::Error> {
        let pod: PodView = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "uid": "u", "labels": {"redis-role": "master"}},
            "spec": {"containers": [{"name": "redis", "image": "redis:7"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": null}]
            }
        }))?;
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        let status = pod.status.unwrap_or_default();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
        let conditions = status.conditions.unwrap_or_default();
        assert_eq!(conditions[0].type_, "Ready");
        assert_eq!(conditions[0].status, "True");

        let service: ServiceView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "selector": {"pod": "p"}, "ports": [{"port": 6379}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example", "ipMode": "VIP"}]}}
        }))?;
        let spec = service.spec.unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.selector.unwrap_or_default()["pod"], "p");
        let ingress = service
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default();
        assert_eq!(ingress[0].hostname.as_deref(), Some("lb.example"));
        assert_eq!(ingress[0].ip, None);
        Ok(())
    }
}
