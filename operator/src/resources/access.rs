//! How the chat-nodes are reached and what they may reach: the headless and client
//! Services, and the RBAC that lets each read its own ChatCluster.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parley_crd::resources::ChatCluster;

use super::names::{Component, Names};
use super::support::*;

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// The headless Service (stable pod names for the ring) and the client Service.
pub fn services(cluster: &ChatCluster) -> [Service; 2] {
    let names = Names::of(cluster);
    let ports = |internal: bool| {
        let mut p = vec![ServicePort {
            name: Some(s("http")),
            port: if internal { HTTP_PORT } else { 80 },
            target_port: Some(IntOrString::String(s("http"))),
            ..Default::default()
        }];
        if internal {
            p.push(ServicePort {
                name: Some(s("internal")),
                port: INTERNAL_PORT,
                target_port: Some(IntOrString::String(s("internal"))),
                ..Default::default()
            });
        }
        p
    };
    let headless = Service {
        metadata: meta(cluster, names.headless_service(), Component::Node),
        spec: Some(ServiceSpec {
            cluster_ip: Some(s("None")),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(cluster, Component::Node)),
            ports: Some(ports(true)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client = Service {
        metadata: meta(cluster, names.client_service(), Component::Node),
        spec: Some(ServiceSpec {
            selector: Some(selector(cluster, Component::Node)),
            ports: Some(ports(false)),
            ..Default::default()
        }),
        ..Default::default()
    };
    [headless, client]
}

/// The chat-nodes' identity and the right to read (and watch) their own ChatCluster.
pub fn rbac(cluster: &ChatCluster) -> (ServiceAccount, Role, RoleBinding) {
    let names = Names::of(cluster);
    let n = names.node();
    let sa = ServiceAccount {
        metadata: meta(cluster, n.clone(), Component::Node),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(cluster, n.clone(), Component::Node),
        // Only their own ChatCluster (its status comes with it): the API server authorizes
        // a list or watch with the field selector `metadata.name=<name>` by that name.
        // Nothing more, or the operator could not grant it (RBAC refuses escalation).
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![s(parley_crd::resources::GROUP)]),
            resources: Some(vec![s("chatclusters")]),
            resource_names: Some(vec![s(names.cluster())]),
            verbs: vec![s("get"), s("list"), s("watch")],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(cluster, n.clone(), Component::Node),
        role_ref: RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s("Role"),
            name: n.clone(),
        },
        subjects: Some(vec![Subject {
            kind: s("ServiceAccount"),
            name: n,
            namespace: Some(namespace(cluster)),
            ..Default::default()
        }]),
    };
    (sa, role, binding)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::cluster;
    use super::super::pdb;
    use super::*;

    #[test]
    fn services_pdb_and_rbac() {
        let [headless, client] = services(&cluster());
        assert_eq!(
            headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(headless.metadata.name.as_deref(), Some("alpha-nodes"));
        assert_eq!(client.spec.unwrap().ports.unwrap()[0].port, 80);
        assert_eq!(
            pdb(&cluster()).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        let (sa, role, binding) = rbac(&cluster());
        assert_eq!(sa.metadata.name.as_deref(), Some("alpha-node"));
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resource_names.as_ref().unwrap(), &["alpha"]);
        assert_eq!(rules[0].resources.as_ref().unwrap(), &["chatclusters"]);
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        assert!(
            !rules
                .iter()
                .any(|r| r.resources.as_ref().unwrap().iter().any(|x| x == "secrets")),
            "no secrets"
        );
        assert_eq!(binding.subjects.unwrap()[0].name, "alpha-node");
    }
}
