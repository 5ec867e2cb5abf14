//! The edge: an Ingress that hashes on the `channel` query parameter with WebSocket-friendly
//! timeouts, or a Gateway API HTTPRoute. Either way the hash is only a hint: a node that
//! does not own a channel forwards to its owner.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use parley_crd::resources::{ChatCluster, GatewaySpec, IngressSpec as IngressExposure};

use super::names::{Component, Names};
use super::support::*;

/// The edge object a cluster asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Edge {
    /// `spec.exposure.ingress`: a networking.k8s.io Ingress.
    Ingress(Ingress),
    /// `spec.exposure.gateway`: a Gateway API HTTPRoute (no Rust type ships it).
    HttpRoute(DynamicObject),
}

/// The Gateway API HTTPRoute resource.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

/// The Ingress when `spec.exposure.ingress` is set, else the HTTPRoute when
/// `spec.exposure.gateway` is, else none (the CRD refuses both at once).
pub fn edge(cluster: &ChatCluster) -> Option<Edge> {
    let exposure = &cluster.spec.exposure;
    if let Some(i) = &exposure.ingress {
        return Some(Edge::Ingress(ingress(cluster, i)));
    }
    let g = exposure.gateway.as_ref()?;
    Some(Edge::HttpRoute(http_route(cluster, g)))
}

/// The Ingress: nginx hashes on the `channel` query parameter, with timeouts past an hour.
fn ingress(cluster: &ChatCluster, i: &IngressExposure) -> Ingress {
    let names = Names::of(cluster);
    let annotations = BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/upstream-hash-by".to_owned(),
            "$arg_channel".to_owned(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_owned(),
            "3700".to_owned(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-send-timeout".to_owned(),
            "3700".to_owned(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
            "1m".to_owned(),
        ),
    ]);
    let mut metadata = meta(cluster, names.edge(), Component::Edge);
    metadata.annotations = Some(annotations);
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: names.client_service(),
            port: Some(ServiceBackendPort {
                number: Some(80),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone(),
            tls: i.tls_secret_name.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![i.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(i.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend,
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Gateway API HTTPRoute to the client Service.
fn http_route(cluster: &ChatCluster, g: &GatewaySpec) -> DynamicObject {
    let names = Names::of(cluster);
    let mut route =
        DynamicObject::new(&names.edge(), &http_route_resource()).within(&namespace(cluster));
    route.metadata = meta(cluster, names.edge(), Component::Edge);
    let mut parent = serde_json::json!({"name": g.parent_ref.name});
    if let Some(ns) = &g.parent_ref.namespace {
        parent["namespace"] = ns.clone().into();
    }
    if let Some(section) = &g.parent_ref.section_name {
        parent["sectionName"] = section.clone().into();
    }
    route.data = serde_json::json!({
        "spec": {
            "parentRefs": [parent],
            "hostnames": g.hostnames,
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": names.client_service(), "port": 80}],
                // WebSockets stay open for hours; the request timeout must not cut them.
                "timeouts": {"request": "0s"}
            }]
        }
    });
    route
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::cluster;
    use super::*;

    #[test]
    fn ingress_hashes_on_the_channel_parameter() {
        let Some(Edge::Ingress(ing)) = edge(&cluster()) else {
            panic!("an ingress")
        };
        let a = ing.metadata.annotations.unwrap();
        assert_eq!(
            a["nginx.ingress.kubernetes.io/upstream-hash-by"],
            "$arg_channel"
        );
        assert!(
            a["nginx.ingress.kubernetes.io/proxy-read-timeout"]
                .parse::<u32>()
                .unwrap()
                > 3600
        );
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            spec.rules.unwrap()[0].host.as_deref(),
            Some("chat.example.com")
        );
    }

    #[test]
    fn gateway_gets_an_http_route_and_nothing_gets_nothing() {
        let mut c = cluster();
        c.spec.exposure.ingress = None;
        assert!(edge(&c).is_none());
        c.spec.exposure.gateway = Some(serde_json::from_value(serde_json::json!({
            "parentRef": {"name": "public", "namespace": "gateways"}, "hostnames": ["chat.example.com"]
        })).unwrap());
        let Some(Edge::HttpRoute(r)) = edge(&c) else {
            panic!("a route")
        };
        assert_eq!(r.data["spec"]["parentRefs"][0]["namespace"], "gateways");
        assert_eq!(
            r.data["spec"]["rules"][0]["backendRefs"][0]["name"],
            "alpha"
        );
        assert_eq!(r.types.unwrap().kind, "HTTPRoute");
    }
}
