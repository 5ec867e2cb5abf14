//! `crds/` must be what the types generate: regenerate with `cargo run -p operator --bin crdgen`.

#[test]
fn checked_in_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("crds");
    for (file, crd) in operator::crds::all() {
        let want = operator::crds::to_yaml(&crd);
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} drifted from the Rust types; run `cargo run -p operator --bin crdgen`"
        );
    }
}

#[test]
fn the_chart_ships_the_same_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, _) in operator::crds::all() {
        let generated = std::fs::read_to_string(root.join("crds").join(file)).unwrap();
        let chart = std::fs::read_to_string(root.join("charts/parley-operator/crds").join(file))
            .unwrap_or_default();
        assert!(
            chart == generated,
            "charts/parley-operator/crds/{file} differs from crds/{file}; copy it over"
        );
    }
}

#[test]
fn crds_carry_what_kubectl_users_rely_on() {
    let crds = operator::crds::all();
    let cluster = serde_json::to_value(&crds[0].1).unwrap();
    let spec = &cluster["spec"];
    assert_eq!(spec["group"], "parley.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["chatc"]));
    assert_eq!(spec["names"]["categories"], serde_json::json!(["parley"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Replicas", "Shards", "Age"]);
    let text = cluster.to_string();
    assert!(
        text.contains("choose exposure.ingress or exposure.gateway, not both"),
        "CEL rule present"
    );
    assert!(text.contains("give redis.url or redis.secretRef, exactly one"));
    let shard = serde_json::to_value(&crds[1].1).unwrap().to_string();
    assert!(shard.contains("clusterRef cannot change"));
    assert!(shard.contains("^[0-9]{1,4}(-[0-9]{1,4})?$"));
}
