//! `spec.exposure.trustedProxies`: the CRD's pattern on each entry (evaluated here with the
//! `regex` of a CEL interpreter, RE2 syntax as the API server's) and the Rust parser the
//! operator renders with agree on what is an address or a CIDR range; the list is bounded.

use cel::{Context, Program, Value};
use kube::CustomResourceExt as _;
use parley_crd::resources::{ChatCluster, ExposureSpec, ProxyAddress, parse_trusted_proxy};

/// The `trustedProxies` property of the generated CRD.
fn property() -> serde_json::Value {
    let crd = serde_json::to_value(ChatCluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["exposure"]["properties"]["trustedProxies"]
        .clone()
}

/// Whether the CRD's item pattern accepts `value` (as the API server would).
fn pattern_accepts(value: &str) -> bool {
    let pattern = property()["items"]["pattern"]
        .as_str()
        .expect("trustedProxies items carry a pattern")
        .to_owned();
    let program = Program::compile("self.matches(pattern)").unwrap();
    let mut ctx = Context::default();
    ctx.add_variable_from_value("self", Value::String(value.to_owned().into()));
    ctx.add_variable_from_value("pattern", Value::String(pattern.into()));
    match program.execute(&ctx) {
        Ok(Value::Bool(b)) => b,
        other => panic!("{value:?}: {other:?}"),
    }
}

const VALID: &[(&str, &str)] = &[
    ("10.42.0.0/16", "10.42.0.0/16"),
    ("198.18.1.1", "198.18.1.1/32"),
    ("198.18.64.1/32", "198.18.64.1/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("255.255.255.255/32", "255.255.255.255/32"),
    ("10.1.2.3/8", "10.1.2.3/8"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("2001:DB8:0:0::/64", "2001:db8::/64"),
    ("::1", "::1/128"),
    ("fd00::/8", "fd00::/8"),
    ("1:2:3:4:5:6:7:8/128", "1:2:3:4:5:6:7:8/128"),
];

const INVALID: &[&str] = &[
    "",
    " 10.0.0.1",
    "10.0.0.1 ",
    "10.0.0.0/33",
    "10.0.0.0/",
    "10.0.0.0/016",
    "10.0.0.0/+8",
    "256.0.0.1",
    "01.2.3.4",
    "10.0.0",
    "10.0.0.1/8/8",
    "10.0.0.0-10.0.0.255",
    "proxy.example.com",
    "2001:db8::/129",
    "fe80::1%eth0",
    "10.0.0.0/8,10.1.0.0/16",
];

#[test]
fn the_crd_pattern_and_the_parser_agree() {
    for (given, normalised) in VALID {
        assert!(pattern_accepts(given), "the CRD refuses {given:?}");
        assert_eq!(parse_trusted_proxy(given).as_deref(), Ok(*normalised));
    }
    for bad in INVALID {
        assert!(!pattern_accepts(bad), "the CRD accepts {bad:?}");
        let err = parse_trusted_proxy(bad).unwrap_err();
        assert!(err.contains("not an IP address or CIDR range"), "{err}");
    }
    // The pattern is loose on IPv6 (groups and colons); the parser catches the rest.
    assert!(pattern_accepts("1:::2"));
    assert!(parse_trusted_proxy("1:::2").is_err());
}

#[test]
fn the_list_is_optional_and_bounded() {
    let p = property();
    assert_eq!(p["type"], "array");
    assert!(p["maxItems"].as_u64().is_some_and(|n| n >= 16), "{p}");
    assert!(
        p["description"]
            .as_str()
            .is_some_and(|d| d.contains("X-Forwarded-For")),
        "{p}"
    );
    let e: ExposureSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    assert!(e.trusted_proxies.is_empty());
    assert!(
        serde_json::to_value(&e)
            .unwrap()
            .get("trustedProxies")
            .is_none(),
        "an empty list is left out"
    );
    let e: ExposureSpec =
        serde_json::from_value(serde_json::json!({"trustedProxies": ["10.0.0.0/8", "x", "::1"]}))
            .unwrap();
    assert_eq!(e.trusted_proxies[1], ProxyAddress("x".into()));
    assert_eq!(
        e.trusted_proxy_ranges(),
        (
            vec!["10.0.0.0/8".to_owned(), "::1/128".to_owned()],
            vec!["x".to_owned()]
        )
    );
}
