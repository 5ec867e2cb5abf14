//! A URL in a ChatCluster's spec never carries credentials (they belong in Secrets): the
//! CRD's CEL rules on each URL-bearing field, evaluated here with a CEL interpreter, refuse
//! user-info (`redis://:pw@host`, `redis://user:pw@host`) and password query parameters, and
//! accept the URLs without them. `e2e/tests/operator.rs` checks that the API server refuses
//! them too.

use cel::{Context, Program, Value};
use kube::CustomResourceExt as _;
use parley_crd::resources::ChatCluster;
use serde_json::Value as Json;

/// The `x-kubernetes-validations` rules on the field at `path` (property names under `spec`).
fn rules(path: &[&str]) -> Vec<(String, String)> {
    let crd = serde_json::to_value(ChatCluster::crd()).unwrap();
    let mut schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for p in path {
        schema = &schema["properties"][*p];
        assert!(!schema.is_null(), "no property {path:?} in the CRD");
    }
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap().to_owned(),
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every rule holds for `value` as `self`.
fn accepted(rules: &[(String, String)], value: &str) -> bool {
    rules.iter().all(|(rule, _)| {
        let program = Program::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let mut ctx = Context::default();
        ctx.add_variable_from_value("self", Value::String(value.to_owned().into()));
        match program.execute(&ctx) {
            Ok(Value::Bool(b)) => b,
            other => panic!("{rule} on {value:?}: {other:?}"),
        }
    })
}

#[test]
fn url_fields_refuse_credentials() {
    let cases: [(&[&str], &[&str], &[&str]); 3] = [
        (
            &["redis", "url"],
            &[
                "redis://:pw@redis:6379",
                "redis://user:pw@redis:6379/0",
                "rediss://user@redis.example.com",
                "redis+unix:///run/redis.sock?pass=pw",
                "unix:///run/redis.sock?db=1&PASSWORD=pw",
                "redis://redis:6379/0?password=pw",
            ],
            &[
                "redis://redis:6379",
                "rediss://redis.example.com:6380/2",
                "redis+unix:///run/redis.sock?db=1",
                "redis://redis:6379/0?protocol=resp3",
            ],
        ),
        (
            &["media", "endpoint"],
            &[
                "http://key:secret@minio:9000",
                "https://AKIA@s3.example.com",
                "https://s3.example.com/?X-Amz-Credential=AKIA&token=t",
            ],
            &["http://minio:9000", "https://s3.eu-west-1.amazonaws.com"],
        ),
        (
            &["kafka", "bootstrapServers"],
            &["user:pw@kafka:9092", "kafka-0:9092,admin:pw@kafka-1:9092"],
            &["kafka:9092", "kafka-0.kafka:9092,kafka-1.kafka:9092"],
        ),
    ];
    for (path, bad, good) in cases {
        let rules = rules(path);
        assert!(!rules.is_empty(), "{path:?} has no validation rule");
        for (rule, message) in &rules {
            assert!(
                message.contains("Secret"),
                "{path:?}: the message of {rule} names where credentials go: {message:?}"
            );
        }
        for v in bad {
            assert!(!accepted(&rules, v), "{path:?} accepts {v:?}");
        }
        for v in good {
            assert!(accepted(&rules, v), "{path:?} refuses {v:?}");
        }
    }
}

/// Every string property of the spec whose name says URL, endpoint or servers has a rule:
/// a URL field added later without one fails here.
#[test]
fn every_url_field_has_a_rule() {
    let crd = serde_json::to_value(ChatCluster::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut missing = Vec::new();
    fn walk(s: &Json, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                let lower = k.to_lowercase();
                if v["type"] == "string"
                    && (lower.ends_with("url")
                        || lower.contains("endpoint")
                        || lower.contains("servers"))
                    && v["x-kubernetes-validations"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                {
                    missing.push(format!("{path}.{k}"));
                }
                walk(v, &format!("{path}.{k}"), missing);
            }
        }
    }
    walk(spec, "spec", &mut missing);
    assert!(
        missing.is_empty(),
        "URL fields without a credentials rule: {missing:?}"
    );
}
