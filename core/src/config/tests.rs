//! Tests of parsing and resolving config files.

use std::path::Path;

use super::*;
use crate::model::{JobType, NotifyEvent};

fn parse(text: &str) -> Result<Config, ConfigError> {
    resolve(
        parse_raw(text, "test.json")?,
        None,
        Path::new("/proj/my-repo"),
    )
}

#[test]
fn the_example_config_loads() {
    let text = include_str!("../../../config.example.json");
    let c = parse(text).unwrap();
    assert_eq!(c.namespace.as_str(), "my-repo");
    assert!(c.harnesses.contains_key("claude"));
    assert_eq!(c.pm_harness().harness, "claude");
}

#[test]
fn defaults_are_rooted_at_the_project() {
    let c = parse("{}").unwrap();
    assert_eq!(c.namespace.as_str(), "my-repo");
    assert_eq!(
        c.store,
        StoreConfig::Sled {
            path: "/proj/my-repo/.wf/db".into()
        }
    );
    assert_eq!(c.state_dir, PathBuf::from("/proj/my-repo/.wf"));
    assert_eq!(c.workdir, PathBuf::from("/proj/my-repo"));
    assert_eq!(c.lease, Duration::from_secs(30));
    assert_eq!(c.max_concurrent, 2);
    assert_eq!(c.harness_for(JobType::Review)[0].harness, "claude");
    assert!(matches!(
        c.harnesses["claude"].kind,
        HarnessKind::Claude {
            permission_mode: PermissionMode::AcceptEdits,
            ..
        }
    ));
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let err = parse(r#"{"namespace": "x", "leaseMS": 5}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `leaseMS`"), "{err}");
    let err = parse(r#"{"harnesses": {"claude": {"comand": "c"}}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("harnesses.claude") && err.contains("`comand`"),
        "{err}"
    );
    let err = parse(r#"{"store": {"kind": "sled", "pth": "x"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`pth`"), "{err}");
    let err = parse(r#"{"store": {"kind": "redis"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis"), "{err}");
}

#[test]
fn bad_values_are_refused_clearly() {
    for (text, needle) in [
        (r#"{"namespace": "Bad NS"}"#, "namespace"),
        (r#"{"maxConcurrent": 0}"#, "maxConcurrent"),
        (r#"{"leaseMs": 10}"#, "leaseMs"),
        (r#"{"timeoutMs": "10"}"#, "timeoutMs"),
        (
            r#"{"harnessDefaults": {"plan": "nope"}}"#,
            "unknown harness \"nope\"",
        ),
        (
            r#"{"harnessDefaults": {"bogus": "claude"}}"#,
            "unknown job type",
        ),
        (r#"{"harnessDefaults": {"review": []}}"#, "empty list"),
        (
            r#"{"harnessDefaults": {"pm": ["claude", "claude"]}}"#,
            "one harness",
        ),
        (
            r#"{"harnesses": {"mine": {"args": []}}}"#,
            "required for a custom harness",
        ),
        (
            r#"{"harnesses": {"claude": {"permissionMode": "yolo"}}}"#,
            "permissionMode",
        ),
        (
            r#"{"harnesses": {"x": {"command": "x", "format": "xml"}}}"#,
            "format",
        ),
        (
            r#"{"harnesses": {"codex": {"permissionMode": "plan"}}}"#,
            "permissionMode applies only to the claude harness",
        ),
        (
            r#"{"harnesses": {"claude": {"sandbox": "bypass"}}}"#,
            "sandbox applies only to the codex harness",
        ),
        (
            r#"{"harnesses": {"codex": {"sandbox": "open"}}}"#,
            "sandbox: unknown value",
        ),
        (
            r#"{"harnesses": {"gemini": {"approvalMode": "yes"}}}"#,
            "approvalMode: unknown value",
        ),
        (
            r#"{"harnesses": {"gemini": {"format": "text"}}}"#,
            "format is for custom harnesses",
        ),
        (
            r#"{"prices": {"m": {"inputPerMTok": -1, "outputPerMTok": 1}}}"#,
            "prices.m",
        ),
        (r#"{"prices": {"m": {"inputPerMTok": 1}}}"#, "outputPerMTok"),
        (r#"{"retryBackoffMs": []}"#, "retryBackoffMs"),
        (
            r#"{"leaseMs": 3000, "killGraceMs": 2000}"#,
            "killGraceMs (2000 ms) must be at most half of leaseMs (3000 ms)",
        ),
        ("{", "EOF"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn fan_out_and_models() {
    let c = parse(
        r#"{"harnesses": {"alt": {"command": "alt-agent", "format": "claude"}},
            "harnessDefaults": {"review": ["claude", {"harness": "alt", "model": "m2"}]}}"#,
    )
    .unwrap();
    let review = c.harness_for(JobType::Review);
    assert_eq!(review.len(), 2);
    assert_eq!(
        review[1],
        HarnessChoice {
            harness: "alt".into(),
            model: Some("m2".into())
        }
    );
    assert_eq!(
        c.harnesses["alt"].kind,
        HarnessKind::Custom {
            format: StreamFormat::Claude
        }
    );
}

#[test]
fn effective_config_round_trips() {
    let c = parse(r#"{"namespace": "abc", "maxConcurrent": 5}"#).unwrap();
    let text = serde_json::to_string(&c.to_raw()).unwrap();
    let again = resolve(
        parse_raw(&text, "eff").unwrap(),
        None,
        Path::new("/elsewhere"),
    )
    .unwrap();
    assert_eq!(again.namespace, c.namespace);
    assert_eq!(again.store, c.store);
    assert_eq!(again.workdir, c.workdir);
    assert_eq!(again.max_concurrent, 5);
    assert_eq!(again.harness_defaults, c.harness_defaults);
}

#[test]
fn root_of_a_config_inside_dot_wf_is_its_parent() {
    assert_eq!(
        root_of(Path::new("/p/.wf/config.json")),
        PathBuf::from("/p")
    );
    assert_eq!(
        root_of(Path::new("/p/conf/wf.json")),
        PathBuf::from("/p/conf")
    );
}

#[test]
fn the_dashboard_address_is_checked() {
    let c = parse(r#"{"httpListen": "127.0.0.1:8787"}"#).unwrap();
    assert_eq!(c.http_listen, Some("127.0.0.1:8787".parse().unwrap()));
    assert_eq!(parse("{}").unwrap().http_listen, None);
    let err = parse(r#"{"httpListen": "localhost"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("httpListen") && err.contains("localhost"),
        "{err}"
    );
}

#[test]
fn notification_hooks_are_checked_and_round_trip() {
    let c = parse(
        r#"{"notify": [
            {"on": ["complete", "blocked"], "url": "http://127.0.0.1:9/hook", "secretEnv": "WF_HOOK_SECRET"},
            {"name": "slack", "on": ["blocked"], "urlEnv": "SLACK_URL", "format": "slack"},
            {"on": ["job_failed"], "command": "cat > /tmp/failed.json", "timeoutMs": 5000}
        ]}"#,
    )
    .unwrap();
    assert_eq!(c.notify.len(), 3);
    assert_eq!(c.notify[1].key, "slack");
    assert!(
        c.notify[0].key.starts_with("hook-"),
        "a derived key hides the URL"
    );
    let set = notify_set(&c.notify);
    for e in NotifyEvent::ALL {
        assert!(set.contains(*e));
    }
    assert!(notify_set(&parse("{}").unwrap().notify).is_empty());
    // The effective config says the same.
    let again = resolve(c.to_raw(), None, Path::new("/proj/my-repo")).unwrap();
    assert_eq!(again.notify, c.notify);

    for (text, names) in [
        (r#"[{"on": [], "url": "http://x"}]"#, "notify[0].on"),
        (r#"[{"on": ["done"], "url": "http://x"}]"#, "done"),
        (
            r#"[{"on": ["complete"]}]"#,
            "exactly one of url, urlEnv or command",
        ),
        (
            r#"[{"on": ["complete"], "url": "http://x", "command": "true"}]"#,
            "exactly one",
        ),
        (
            r#"[{"on": ["complete"], "url": "ftp://x"}]"#,
            "notify[0].url",
        ),
        (
            r#"[{"on": ["complete"], "url": "http://x", "format": "teams"}]"#,
            "teams",
        ),
        (
            r#"[{"on": ["complete"], "command": "true", "secretEnv": "S"}]"#,
            "belong to a webhook",
        ),
        (
            r#"[{"on": ["complete"], "url": "http://x", "timeoutMs": 5}]"#,
            "fixed at 10 s",
        ),
        (
            r#"[{"on": ["complete"], "url": "http://x", "headers": {"a b": "c"}}]"#,
            "header name",
        ),
        (
            r#"[{"on": ["complete"], "url": "http://x", "sign": true}]"#,
            "sign",
        ),
        (
            r#"[{"name": "a", "on": ["complete"], "url": "http://x"}, {"name": "a", "on": ["blocked"], "command": "true"}]"#,
            "a second hook named",
        ),
    ] {
        let err = parse(&format!(r#"{{"notify": {text}}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains(names), "{text}: {err}");
    }
}
