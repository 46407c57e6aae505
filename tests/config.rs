//! The configuration as a user meets it (PROTOCOL.md §9): the TOML file, its errors with line
//! numbers, the command line and its precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use herald::cli::{Cli, Command, ConfigCommand, LogFormat, ServeArgs, run_config_command_to};
use herald::config::{
    AuthConfig, ClusterConfig, Compression, Config, ConfigError, Permissions, ProxyConfig,
    ProxyRoute, SlowConsumer, TopicConfig, WebhookConfig, WriteDelay,
};

fn err(src: &str) -> ConfigError {
    match Config::from_toml_str(src) {
        Ok(c) => panic!("expected an error for:\n{src}\ngot {c:?}"),
        Err(e) => e,
    }
}

/// Asserts the error's line and that its one-line message contains every fragment.
fn assert_err(e: &ConfigError, line: usize, fragments: &[&str]) {
    let text = e.to_string();
    assert_eq!(e.line(), Some(line), "wrong line in: {text}");
    assert!(text.starts_with(&format!("line {line}: ")), "{text}");
    assert!(!text.contains('\n'), "not one line: {text}");
    for f in fragments {
        assert!(text.contains(f), "{text:?} should contain {f:?}");
    }
}

/// A file under the system temp dir, unique to this process and test.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn example_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("herald.example.toml");
    std::fs::read_to_string(path).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_match_the_protocol() {
    let c = Config::default();
    assert_eq!(c.listen, addr("127.0.0.1:7400"));
    assert_eq!(c.max_frame, 65536);
    assert_eq!(c.heartbeat, Duration::from_secs(25));
    assert_eq!(c.session.ttl, Duration::from_secs(120));
    assert_eq!(c.session.buffer_messages, 1024);
    assert_eq!(c.session.buffer_bytes, 4 * 1024 * 1024);
    assert_eq!(c.session.slow_consumer, SlowConsumer::DropOldest);
    assert_eq!(c.limits.max_subscriptions, 1000);
    assert_eq!(c.limits.max_connections, 100_000);
    assert_eq!(c.limits.max_connections_per_ip, 10_000);
    assert_eq!(c.limits.publish_rate, 0);
    assert_eq!(c.limits.max_pending_requests, 100);
    assert_eq!(c.auth, None);
    assert!(c.topics.is_empty());
    assert_eq!(c.cluster, None);
    assert_eq!(c.data_dir, None);
    let t = TopicConfig::default();
    assert_eq!(t.history, 0);
    assert_eq!(t.history_ttl, None);
    assert!(!t.persist);
    assert_eq!(t.dedup_window, Duration::from_secs(120));
    assert_eq!(t.ack_wait, Duration::from_secs(30));
    assert_eq!(t.max_deliveries, 5);
    assert_eq!(t.max_rewind, 1000);
    assert!(c.validate().is_ok());

    assert_eq!(Config::from_toml_str("").unwrap(), c);
    assert_eq!(Config::from_toml_str("# only a comment\n\n").unwrap(), c);
    assert_eq!(ServeArgs::default().load_config().unwrap(), c);
}

#[test]
fn supported_keys_parse() {
    let c = Config::from_toml_str(
        r#"
listen = "0.0.0.0:9000"
max_frame = "128KiB"
heartbeat = "1m30s"

[session]
ttl = "10m"
buffer_messages = 50
buffer_bytes = 2_000_000
slow_consumer = "disconnect"

[limits]
max_subscriptions = 7
max_connections = 0x10
"#,
    )
    .unwrap();
    assert_eq!(c.listen, addr("0.0.0.0:9000"));
    assert_eq!(c.max_frame, 128 * 1024);
    assert_eq!(c.heartbeat, Duration::from_secs(90));
    assert_eq!(c.session.ttl, Duration::from_secs(600));
    assert_eq!(c.session.buffer_messages, 50);
    assert_eq!(c.session.buffer_bytes, 2_000_000);
    assert_eq!(c.session.slow_consumer, SlowConsumer::Disconnect);
    assert_eq!(c.session.write_delay, WriteDelay::Auto);
    for (text, want) in [
        ("\"0\"", WriteDelay::Off),
        ("\"0ms\"", WriteDelay::Off),
        ("\"auto\"", WriteDelay::Auto),
        ("\"2ms\"", WriteDelay::Every(Duration::from_millis(2))),
    ] {
        let c = Config::from_toml_str(&format!("[session]\nwrite_delay = {text}")).unwrap();
        assert_eq!(c.session.write_delay, want, "{text}");
    }
    for bad in ["\"soon\"", "5", "true"] {
        let e = Config::from_toml_str(&format!("[session]\nwrite_delay = {bad}")).unwrap_err();
        assert!(e.to_string().contains("write_delay"), "{bad}: {e}");
    }
    assert_eq!(c.limits.max_subscriptions, 7);
    assert_eq!(c.limits.max_connections, 16);
    // Untouched keys keep their defaults.
    assert_eq!(c.limits.max_connections_per_ip, 10_000);

    // Dotted keys and inline tables are the same thing in TOML.
    let dotted =
        Config::from_toml_str("session.ttl = \"5s\"\nlimits = { max_connections = 3 }").unwrap();
    assert_eq!(dotted.session.ttl, Duration::from_secs(5));
    assert_eq!(dotted.limits.max_connections, 3);
    assert_eq!(
        Config::from_toml_str("listen = \"[::1]:0\"")
            .unwrap()
            .listen,
        addr("[::1]:0")
    );
}

#[test]
fn compression_is_auto_or_off() {
    assert_eq!(Config::default().compression, Compression::Auto);
    for (text, want) in [("auto", Compression::Auto), ("off", Compression::Off)] {
        let c = Config::from_toml_str(&format!("compression = \"{text}\"")).unwrap();
        assert_eq!(c.compression, want);
        assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
    }
    assert_err(
        &err("\ncompression = \"gzip\""),
        2,
        &["compression", r#"use "auto" or "off""#],
    );
    assert_err(&err("compression = true"), 1, &["compression"]);
}

const FULL: &str = r#"listen = "127.0.0.1:0"
max_frame = 1048576
heartbeat = "500ms"

[session]
ttl = "30s"
buffer_messages = 10
buffer_bytes = "64KiB"
slow_consumer = "drop_oldest"

[limits]
max_subscriptions = 5
max_connections = 6
max_connections_per_ip = 7
publish_rate = 8
max_pending_requests = 9

[auth]
hs256_secret = "s3cret"
public_key_file = "keys/jwt.pem"
public_key_files = ["keys/old.pem", "keys/new.pem"]
jwks_url = "http://127.0.0.1:8080/jwks.json"
jwks_refresh = "90s"
issuer = "https://idp.example"
audience = ["herald", "herald-staging"]
api_keys = ["k1", "k2"]
admin_keys = ["adm"]
origins = ["https://app.example"]
refresh_notice = "20s"
revocation_ttl = "48h"

[auth.anonymous]
publish = ["public/chat"]
subscribe = ["public/**"]

[[topics]]
pattern = "chat/**"
history = 100
history_ttl = "1h"
persist = true
dedup_window = "2m"
ack_wait = "10s"
max_deliveries = 3
max_rewind = 50

[[topics]]
pattern = "orders/*"

[cluster]
redis = "redis://127.0.0.1:6379"

[proxy]
timeout = "250ms"
connect = "http://127.0.0.1:9000/connect"
rpc = "http://127.0.0.1:9000/rpc"
[[proxy.subscribe]]
pattern = "chat/**"
url = "http://127.0.0.1:9000/subscribe"
[[proxy.publish]]
pattern = "chat/**"
url = "http://127.0.0.1:9000/publish"
skip_api_keys = true
[[proxy.publish]]
pattern = "orders/*"
url = "http://127.0.0.1:9001/publish"

[[webhooks]]
url = "http://127.0.0.1:9000/events"
events = ["session.opened", "message.dead"]
secret = "hook-secret"
retry_for = "1m"
queue = 50
[[webhooks]]
url = "http://127.0.0.1:9002/all"
"#;

#[test]
fn full_schema_parses() {
    let c = Config::from_toml_str(FULL).unwrap();
    assert_eq!(c.limits.max_connections_per_ip, 7);
    assert_eq!(c.limits.publish_rate, 8);
    assert_eq!(c.limits.max_pending_requests, 9);
    assert_eq!(
        c.auth,
        Some(AuthConfig {
            hs256_secret: Some("s3cret".into()),
            public_key_file: Some("keys/jwt.pem".into()),
            api_keys: vec!["k1".into(), "k2".into()],
            admin_keys: vec!["adm".into()],
            origins: Some(vec!["https://app.example".into()]),
            anonymous: Permissions {
                publish: vec!["public/chat".into()],
                subscribe: vec!["public/**".into()],
            },
            public_key_files: vec!["keys/old.pem".into(), "keys/new.pem".into()],
            jwks_url: Some("http://127.0.0.1:8080/jwks.json".into()),
            jwks_refresh: Duration::from_secs(90),
            issuer: Some("https://idp.example".into()),
            audience: Some(vec!["herald".into(), "herald-staging".into()]),
            refresh_notice: Duration::from_secs(20),
            revocation_ttl: Duration::from_secs(48 * 3600),
        })
    );
    assert_eq!(
        c.topics,
        vec![
            TopicConfig {
                pattern: "chat/**".into(),
                history: 100,
                history_ttl: Some(Duration::from_secs(3600)),
                persist: true,
                dedup_window: Duration::from_secs(120),
                ack_wait: Duration::from_secs(10),
                max_deliveries: 3,
                max_rewind: 50,
            },
            TopicConfig {
                pattern: "orders/*".into(),
                ..TopicConfig::default()
            },
        ]
    );
    assert_eq!(
        c.cluster,
        Some(ClusterConfig {
            redis: vec!["redis://127.0.0.1:6379".into()]
        })
    );
    let route = |pattern: &str, url: &str, skip_api_keys| ProxyRoute {
        pattern: pattern.into(),
        url: url.into(),
        skip_api_keys,
    };
    assert_eq!(
        c.proxy,
        Some(ProxyConfig {
            timeout: Duration::from_millis(250),
            connect: Some("http://127.0.0.1:9000/connect".into()),
            rpc: Some("http://127.0.0.1:9000/rpc".into()),
            subscribe: vec![route("chat/**", "http://127.0.0.1:9000/subscribe", false)],
            publish: vec![
                route("chat/**", "http://127.0.0.1:9000/publish", true),
                route("orders/*", "http://127.0.0.1:9001/publish", false),
            ],
        })
    );
    assert_eq!(
        c.webhooks,
        vec![
            WebhookConfig {
                url: "http://127.0.0.1:9000/events".into(),
                events: vec!["session.opened".into(), "message.dead".into()],
                secret: Some("hook-secret".into()),
                retry_for: Duration::from_secs(60),
                queue: 50,
            },
            WebhookConfig {
                url: "http://127.0.0.1:9002/all".into(),
                events: Vec::new(),
                secret: None,
                retry_for: WebhookConfig::RETRY_FOR,
                queue: WebhookConfig::QUEUE,
            },
        ]
    );
}

#[test]
fn backend_settings_are_checked() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[proxy]\ntimeout = \"0s\"",
            2,
            "`proxy.timeout` must be between 1ms and 60s",
        ),
        (
            "[proxy]\nconnect = \"https://x/c\"",
            2,
            "`proxy.connect` must be an http:// URL",
        ),
        (
            "[proxy]\nrpc = \"nope\"",
            2,
            "`proxy.rpc` must be an http:// URL",
        ),
        ("[proxy]\nfoo = 1", 2, "unknown key `foo` in [proxy]"),
        (
            "[[proxy.subscribe]]\npattern = \"a\"",
            1,
            "`proxy.subscribe[0].url` is required",
        ),
        (
            "[[proxy.publish]]\nurl = \"http://h/p\"",
            1,
            "`proxy.publish[0].pattern` is required",
        ),
        (
            "[[proxy.publish]]\npattern = \"a//b\"\nurl = \"http://h/p\"",
            2,
            "`proxy.publish[0].pattern`",
        ),
        (
            "[[proxy.subscribe]]\npattern = \"a\"\nurl = \"http://h/p\"\nskip_api_keys = true",
            4,
            "unknown key `skip_api_keys` in [[proxy.subscribe]]",
        ),
        (
            "[[webhooks]]\nevents = []",
            1,
            "`webhooks[0].url` is required",
        ),
        (
            "[[webhooks]]\nurl = \"http://h/e\"\nevents = [\"session.open\"]",
            3,
            "unknown event \"session.open\"",
        ),
        (
            "[[webhooks]]\nurl = \"http://h/e\"\nretry_for = \"0s\"",
            3,
            "`webhooks[0].retry_for` must be between 1s and 7d",
        ),
        (
            "[[webhooks]]\nurl = \"http://h/e\"\nqueue = 0",
            3,
            "`webhooks[0].queue` must be between 1 and 1000000",
        ),
        (
            "[[webhooks]]\nurl = \"http://h/e\"\nsecret = \"\"",
            3,
            "`webhooks[0].secret` cannot be empty",
        ),
        (
            "webhooks = 3",
            1,
            "`webhooks` must be an array of tables (`[[webhooks]]` sections)",
        ),
    ];
    for (src, line, message) in cases {
        assert_err(&err(src), *line, &[message]);
    }
}

#[test]
fn example_file_loads_and_documents_every_key() {
    let example = example_file();
    // The defaults, and history for the web app's chat rooms.
    let chat = TopicConfig {
        pattern: "chat/**".into(),
        history: 1000,
        persist: true,
        ..TopicConfig::default()
    };
    let loaded = Config::from_toml_str(&example).unwrap();
    assert_eq!(loaded.topics, std::slice::from_ref(&chat));
    assert_eq!(
        Config {
            topics: Vec::new(),
            ..loaded
        },
        Config::default()
    );

    // Uncommenting every commented-out setting gives the full schema, still with defaults
    // (apart from the sample values), which loads.
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars()
                            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                    }) =>
            {
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let full = Config::from_toml_str(&uncommented).unwrap();
    assert!(full.auth.is_some() && full.cluster.is_some() && full.topics.len() == 2);
    assert_eq!(full.limits, Config::default().limits);
    assert_eq!(full.topics[1], chat);
    let defaults = TopicConfig {
        pattern: "orders/**".into(),
        history_ttl: Some(Duration::from_secs(3600)),
        ..TopicConfig::default()
    };
    assert_eq!(full.topics[0], defaults);
    // Every feature has landed: the normal path loads it too.
    assert_eq!(Config::from_toml_str(&uncommented).unwrap(), full);

    // Every key of the schema appears in the example.
    for key in [
        "listen",
        "max_frame",
        "heartbeat",
        "[session]",
        "ttl",
        "buffer_messages",
        "buffer_bytes",
        "slow_consumer",
        "write_delay",
        "[limits]",
        "max_subscriptions",
        "max_connections",
        "max_connections_per_ip",
        "publish_rate",
        "max_pending_requests",
        "[auth]",
        "hs256_secret",
        "public_key_file",
        "public_key_files",
        "jwks_url",
        "jwks_refresh",
        "issuer",
        "audience",
        "api_keys",
        "admin_keys",
        "origins",
        "refresh_notice",
        "revocation_ttl",
        "[auth.anonymous]",
        "publish",
        "subscribe",
        "[[topics]]",
        "pattern",
        "history",
        "history_ttl",
        "persist",
        "dedup_window",
        "ack_wait",
        "max_deliveries",
        "max_rewind",
        "[cluster]",
        "redis",
        "[proxy]",
        "timeout",
        "connect",
        "rpc",
        "[[proxy.subscribe]]",
        "url",
        "[[proxy.publish]]",
        "skip_api_keys",
        "[[webhooks]]",
        "events",
        "secret",
        "retry_for",
        "queue",
    ] {
        let written = if key.starts_with('[') {
            key.to_string()
        } else {
            format!("{key} = ")
        };
        assert!(uncommented.contains(&written), "example lacks {key}");
    }
}

#[test]
fn unknown_keys_name_the_key_the_table_and_the_line() {
    assert_err(
        &err("listen = \"127.0.0.1:1\"\nlistn = \"x\"\n"),
        2,
        &["unknown key `listn` in the top-level table"],
    );
    assert_err(
        &err("# comment\n\n[session]\nttl = \"1s\"\n\n\nbuffer_msgs = 3\n"),
        7,
        &["unknown key `buffer_msgs` in [session]"],
    );
    assert_err(
        &err("[limits]\nmax_subscriptions = 1\nmax_subscribers = 2\n"),
        3,
        &["unknown key `max_subscribers` in [limits]"],
    );
    // Dotted keys and inline tables report the same way.
    assert_err(&err("session.bufer = 1"), 1, &["`bufer` in [session]"]);
    assert_err(
        &err("\nlimits = { max_connections = 1, nope = 2 }"),
        2,
        &["`nope` in [limits]"],
    );
    // The first unknown key by line, not by name.
    assert_err(&err("[session]\nzzz = 1\naaa = 2\n"), 2, &["`zzz`"]);
    // data_dir comes from the command line only.
    assert_err(&err("data_dir = \"/tmp\""), 1, &["unknown key `data_dir`"]);

    // Tables of features not landed yet: checked too once allowed.
    let auth = "[auth]\nhs256_secret = \"x\"\napi_key = [\"k\"]\n";
    assert_err(&err(auth), 3, &["unknown key `api_key` in [auth]"]);
    let anon = "[auth]\n[auth.anonymous]\npublish = []\nsubscrib = []\n";
    assert_err(
        &err(anon),
        4,
        &["unknown key `subscrib` in [auth.anonymous]"],
    );
    let topics = "[[topics]]\npattern = \"a\"\n\n[[topics]]\npattern = \"b\"\nhistroy = 5\n";
    assert_err(&err(topics), 6, &["unknown key `histroy` in [[topics]]"]);
    assert_err(
        &err("[cluster]\nredis = \"redis://x\"\nnodes = 3\n"),
        3,
        &["unknown key `nodes` in [cluster]"],
    );
    match err("\n[session]\nbuffer_msgs = 3\n") {
        ConfigError::UnknownKey { key, table, .. } => {
            assert_eq!((key.as_str(), table.as_str()), ("buffer_msgs", "[session]"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_durations_and_sizes() {
    assert_err(
        &err("\n\nheartbeat = \"25 parsecs\""),
        3,
        &[
            r#"invalid duration "25 parsecs" for `heartbeat`"#,
            "unknown unit `parsecs`",
            r#"(use e.g. "250ms", "25s", "2m")"#,
        ],
    );
    assert_err(
        &err("heartbeat = 25"),
        1,
        &["invalid duration 25", "without a unit"],
    );
    assert_err(&err("heartbeat = \"-5s\""), 1, &["cannot be negative"]);
    assert_err(&err("heartbeat = \"1.5s\""), 1, &["fractions"]);
    assert_err(
        &err("heartbeat = true"),
        1,
        &["`heartbeat` must be a duration", "boolean"],
    );
    assert_err(
        &err("[session]\nttl = \"\""),
        2,
        &["`session.ttl`", "empty"],
    );
    assert_err(
        &err("[session]\nttl = 2.5"),
        2,
        &["`session.ttl`", "without a unit"],
    );
    assert_err(
        &err("[session]\nbuffer_bytes = \"4 parsecs\""),
        2,
        &[
            r#"invalid size "4 parsecs" for `session.buffer_bytes`"#,
            r#""4MiB""#,
        ],
    );
    assert_err(
        &err("max_frame = -1"),
        1,
        &["`max_frame` cannot be negative"],
    );
    assert_err(&err("max_frame = \"1.5KiB\""), 1, &["fractions"]);
    assert_err(&err("max_frame = 1e5"), 1, &["whole bytes"]);
    assert_err(
        &err("max_frame = [1]"),
        1,
        &["`max_frame` must be a size", "array"],
    );
    assert_err(&err("max_frame = \"99999999999999GiB\""), 1, &["too large"]);
}

#[test]
fn bad_values_name_the_key_and_line() {
    assert_err(
        &err("listen = \"localhost\""),
        1,
        &["invalid address \"localhost\" for `listen`"],
    );
    assert_err(
        &err("listen = 7400"),
        1,
        &["`listen` must be a string, found integer"],
    );
    assert_err(
        &err("[session]\nslow_consumer = \"block\""),
        2,
        &[
            r#"invalid value "block" for `session.slow_consumer`"#,
            "drop_oldest",
        ],
    );
    assert_err(
        &err("[session]\nbuffer_messages = \"10\""),
        2,
        &["must be an integer"],
    );
    assert_err(
        &err("[limits]\nmax_connections = -3"),
        2,
        &["cannot be negative"],
    );
    assert_err(
        &err("session = 5"),
        1,
        &["`session` must be a table, found integer"],
    );
    assert_err(
        &err("[limits]\npublish_rate = 5000000000"),
        2,
        &["`limits.publish_rate` is too large"],
    );
    assert_err(
        &err("[auth]\napi_keys = [\"a\", 3]"),
        2,
        &["`auth.api_keys` must be an array of strings"],
    );
    assert_err(
        &err("topics = { pattern = \"a\" }"),
        1,
        &["`topics` must be an array of tables"],
    );
    assert_err(
        &err("[[topics]]\nhistory = 5\n"),
        1,
        &["`topics[0].pattern` is required"],
    );
    assert_err(&err("\n[cluster]\n"), 2, &["`cluster.redis` is required"]);
}

#[test]
fn semantic_checks_point_at_the_line() {
    assert_err(
        &err("\nmax_frame = 100"),
        2,
        &["`max_frame` must be between 256 bytes and 16MiB"],
    );
    assert_err(
        &err("max_frame = \"17MiB\""),
        1,
        &["`max_frame` must be between"],
    );
    assert!(Config::from_toml_str("max_frame = 256").is_ok());
    assert!(Config::from_toml_str("max_frame = \"16MiB\"").is_ok());
    assert_err(
        &err("heartbeat = \"50ms\""),
        1,
        &["`heartbeat` must be between 100ms"],
    );
    assert_err(
        &err("[session]\nttl = \"1s\"\nbuffer_messages = 0"),
        3,
        &["`session.buffer_messages` must be at least 1"],
    );
    assert_err(
        &err("[session]\nbuffer_bytes = 1000"),
        2,
        &["`session.buffer_bytes` must be at least 1KiB"],
    );
    assert_err(&err("[limits]\nmax_subscriptions = 0"), 2, &["at least 1"]);
    assert_err(
        &err("[auth]\nrevocation_ttl = \"10s\""),
        2,
        &["`auth.revocation_ttl` must be 1m to 366d"],
    );
    assert_err(
        &err("[[topics]]\npattern = \"a\"\n[[topics]]\npattern = \"\""),
        4,
        &["`topics[1].pattern` cannot be empty"],
    );
    assert_err(
        &err("[[topics]]\npattern = \"a\"\nmax_deliveries = 0"),
        3,
        &["`topics[0].max_deliveries` must be at least 1"],
    );
    assert_err(
        &err("[cluster]\nredis = \"http://x\""),
        2,
        &["`cluster.redis` must be a redis://"],
    );
    assert_err(&err("[auth]\nhs256_secret = \"\""), 2, &["cannot be empty"]);

    // validate() alone names the key, without a line.
    let c = Config {
        max_frame: 10,
        ..Config::default()
    };
    let e = c.validate().unwrap_err();
    assert_eq!(e.line(), None);
    assert_eq!(e.key(), Some("max_frame"));
}

#[test]
fn every_feature_loads_from_the_file_and_the_flags() {
    let c = Config::from_toml_str(
        "[limits]\nmax_pending_requests = 7\n[[topics]]\npattern = \"chat/**\"\nhistory = 5\n",
    )
    .unwrap();
    assert_eq!(c.limits.max_pending_requests, 7);
    assert_eq!(c.topics[0].history, 5);

    let args = ServeArgs {
        data_dir: Some("/var/lib/herald".into()),
        ..ServeArgs::default()
    };
    let c = args.load_config().unwrap();
    assert_eq!(
        c.data_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/herald"))
    );
    let args = ServeArgs {
        redis: vec!["redis://127.0.0.1".into()],
        ..ServeArgs::default()
    };
    let c = args.load_config().unwrap();
    assert_eq!(c.cluster.unwrap().redis, vec!["redis://127.0.0.1"]);
    // A data directory and cluster mode exclude each other.
    let args = ServeArgs {
        redis: vec!["redis://127.0.0.1".into()],
        data_dir: Some("/var/lib/herald".into()),
        ..ServeArgs::default()
    };
    let e = args.load_config().unwrap_err();
    assert!(e.to_string().contains("cannot be combined"), "{e}");
}

#[test]
fn syntax_errors_have_lines() {
    let e = err("listen = \"127.0.0.1:1\"\nheartbeat = \n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert_err(&e, 2, &["TOML syntax error"]);
    assert_err(
        &err("[session]\nttl = \"1s\"\n[session]\n"),
        3,
        &["duplicate key"],
    );
    assert_err(&err("\n\nx = \"unterminated\n"), 3, &["TOML syntax error"]);
}

#[test]
fn files_name_themselves_in_errors() {
    let path = temp_file("bad.toml", "[session]\nbuffer_msgs = 3\n");
    let e = Config::from_file(&path).unwrap_err();
    assert_eq!(e.file(), Some(path.as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: line 2: unknown key `buffer_msgs` in [session]",
            path.display()
        )
    );

    let missing = Path::new("/nonexistent/herald.toml");
    let e = Config::from_file(missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string().starts_with("/nonexistent/herald.toml: "),
        "{e}"
    );

    let good = temp_file("good.toml", "heartbeat = \"5s\"\n");
    assert_eq!(
        Config::from_file(&good).unwrap().heartbeat,
        Duration::from_secs(5)
    );
}

#[test]
fn to_toml_round_trips() {
    let defaults = Config::default();
    assert_eq!(
        Config::from_toml_str(&defaults.to_toml()).unwrap(),
        defaults
    );

    let custom = Config::from_toml_str(
        "listen = \"[::]:81\"\nmax_frame = 1000\nheartbeat = \"1500ms\"\n\
         [session]\nttl = \"0s\"\nbuffer_bytes = 1025\nslow_consumer = \"disconnect\"\n\
         [limits]\nmax_connections = 12",
    )
    .unwrap();
    assert_eq!(Config::from_toml_str(&custom.to_toml()).unwrap(), custom);

    let full = Config::from_toml_str(FULL).unwrap();
    let shown = full.to_toml();
    assert_eq!(Config::from_toml_str(&shown).unwrap(), full, "{shown}");

    // One audience is shown as a string; without [auth] JWKS settings, their defaults.
    let mut one = full.clone();
    if let Some(auth) = one.auth.as_mut() {
        auth.audience = Some(vec!["herald".into()]);
        auth.jwks_url = None;
        auth.issuer = None;
    }
    let shown = one.to_toml();
    assert!(shown.contains("audience = \"herald\"\n"), "{shown}");
    assert_eq!(Config::from_toml_str(&shown).unwrap(), one, "{shown}");

    // Strings that need escaping survive.
    let mut odd = full.clone();
    if let Some(auth) = odd.auth.as_mut() {
        auth.hs256_secret = Some("quote\" back\\slash \n newline".into());
        auth.origins = None;
    }
    odd.topics[1].pattern = "a/{b,c}/**".into();
    let back = Config::from_toml_str(&odd.to_toml()).unwrap();
    assert_eq!(back, odd);

    // data_dir is shown, as a comment (it is not a file setting).
    let with_dir = Config {
        data_dir: Some("/var/lib/herald".into()),
        ..Config::default()
    };
    let shown = with_dir.to_toml();
    assert!(
        shown.contains("# data_dir = \"/var/lib/herald\""),
        "{shown}"
    );
    assert_eq!(Config::from_toml_str(&shown).unwrap(), Config::default());
}

#[test]
fn both_command_line_forms_start_the_server() {
    let cli = Cli::try_parse_from(["herald", "--listen", "127.0.0.1:9001"]).unwrap();
    assert!(cli.command.is_none());
    assert_eq!(
        cli.serve_args().unwrap().listen,
        Some(addr("127.0.0.1:9001"))
    );

    let cli = Cli::try_parse_from(["herald", "serve", "--listen", "127.0.0.1:9002"]).unwrap();
    assert!(matches!(cli.command, Some(Command::Serve(_))));
    assert_eq!(
        cli.serve_args().unwrap().listen,
        Some(addr("127.0.0.1:9002"))
    );

    let cli = Cli::try_parse_from(["herald", "serve", "--log-format", "json"]).unwrap();
    assert_eq!(cli.serve_args().unwrap().log_format, LogFormat::Json);

    // Mixing the forms is ambiguous and refused.
    assert!(Cli::try_parse_from(["herald", "--listen", "127.0.0.1:1", "serve"]).is_err());
    assert!(Cli::try_parse_from(["herald", "--listen", "not an address"]).is_err());
    assert!(Cli::try_parse_from(["herald", "--log-format", "yaml"]).is_err());

    let cli = Cli::try_parse_from(["herald", "config", "check", "herald.toml"]).unwrap();
    assert!(cli.serve_args().is_none());
    match cli.command {
        Some(Command::Config(ConfigCommand::Check { file })) => {
            assert_eq!(file, PathBuf::from("herald.toml"));
        }
        other => panic!("{other:?}"),
    }
    let cli =
        Cli::try_parse_from(["herald", "config", "show", "--listen", "127.0.0.1:9003"]).unwrap();
    match cli.command {
        Some(Command::Config(ConfigCommand::Show(args))) => {
            assert_eq!(args.listen, Some(addr("127.0.0.1:9003")));
        }
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from(["herald", "config", "check"]).is_err());
}

#[test]
fn config_commands_print_and_exit() {
    let run = |cmd: &ConfigCommand| {
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        let code = run_config_command_to(cmd, &mut out, &mut errs);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(errs).unwrap(),
        )
    };
    let good = temp_file("check-good.toml", "listen = \"127.0.0.1:7777\"\n");
    let (code, out, errs) = run(&ConfigCommand::Check { file: good.clone() });
    assert_eq!((code, errs.as_str()), (0, ""));
    assert_eq!(out, format!("ok: {}\n", good.display()));

    let bad = temp_file("check-bad.toml", "\n[cluster]\nredis = \"http://x\"\n");
    let (code, out, errs) = run(&ConfigCommand::Check { file: bad.clone() });
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        errs,
        format!(
            "error: {}: line 3: `cluster.redis` must be a redis:// or rediss:// URL (found \"http://x\")\n",
            bad.display()
        )
    );

    let show = ConfigCommand::Show(ServeArgs {
        config: Some(good),
        listen: Some(addr("127.0.0.1:8888")),
        ..ServeArgs::default()
    });
    let (code, out, _) = run(&show);
    assert_eq!(code, 0);
    let shown = Config::from_toml_str(&out).unwrap();
    assert_eq!(shown.listen, addr("127.0.0.1:8888"));

    let show_bad = ConfigCommand::Show(ServeArgs {
        config: Some(bad),
        ..ServeArgs::default()
    });
    assert_eq!(run(&show_bad).0, 1);
}

/// The only test that touches the process environment (tests run in parallel threads of one
/// process): flags beat environment variables, which beat the file.
#[test]
fn precedence_flag_over_env_over_file() {
    let file = temp_file(
        "precedence.toml",
        "listen = \"127.0.0.1:1001\"\nheartbeat = \"3s\"\n",
    );
    let load = |args: &[&str]| {
        let cli = Cli::try_parse_from(args).unwrap();
        cli.serve_args().unwrap().load_config().unwrap()
    };
    let file_arg = file.to_str().unwrap();

    // File alone.
    let c = load(&["herald", "--config", file_arg]);
    assert_eq!(
        (c.listen, c.heartbeat),
        (addr("127.0.0.1:1001"), Duration::from_secs(3))
    );

    // SAFETY: no other test reads or writes these variables (see the doc comment).
    unsafe {
        std::env::set_var("HERALD_CONFIG", &file);
        std::env::set_var("HERALD_LISTEN", "127.0.0.1:1002");
        std::env::set_var("HERALD_LOG_FORMAT", "json");
    }
    let result = std::panic::catch_unwind(|| {
        // Variables over the file; the file still supplies the rest.
        let c = load(&["herald"]);
        assert_eq!(
            (c.listen, c.heartbeat),
            (addr("127.0.0.1:1002"), Duration::from_secs(3))
        );
        let cli = Cli::try_parse_from(["herald", "serve"]).unwrap();
        assert_eq!(cli.serve_args().unwrap().log_format, LogFormat::Json);
        assert_eq!(
            cli.serve_args().unwrap().config.as_deref(),
            Some(file.as_path())
        );

        // Flags over variables, in both forms.
        let c = load(&["herald", "--listen", "127.0.0.1:1003"]);
        assert_eq!(
            (c.listen, c.heartbeat),
            (addr("127.0.0.1:1003"), Duration::from_secs(3))
        );
        let c = load(&["herald", "serve", "--listen", "127.0.0.1:1004"]);
        assert_eq!(c.listen, addr("127.0.0.1:1004"));
        let cli = Cli::try_parse_from(["herald", "--log-format", "text"]).unwrap();
        assert_eq!(cli.serve_args().unwrap().log_format, LogFormat::Text);

        // Cluster mode from the environment.
        unsafe { std::env::set_var("HERALD_REDIS", "redis://127.0.0.1:6379") };
        let cli = Cli::try_parse_from(["herald"]).unwrap();
        let c = cli.serve_args().unwrap().load_config().unwrap();
        assert_eq!(c.cluster.unwrap().redis, vec!["redis://127.0.0.1:6379"]);
        unsafe { std::env::remove_var("HERALD_REDIS") };
    });
    unsafe {
        for var in [
            "HERALD_CONFIG",
            "HERALD_LISTEN",
            "HERALD_LOG_FORMAT",
            "HERALD_REDIS",
        ] {
            std::env::remove_var(var);
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }

    // Nothing set: the defaults.
    let cli = Cli::try_parse_from(["herald"]).unwrap();
    assert_eq!(cli.serve_args().unwrap(), &ServeArgs::default());
}

/// `herald config check FILE`, the real binary: (exit code, stdout, stderr).
fn herald_check(file: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// `config check` compiles `[auth]` as the server would at start: a key file that is missing
/// or not a public key fails the check, with the key's line, instead of passing and then
/// stopping the server.
#[test]
fn config_check_reads_the_auth_key_file() {
    let good = temp_file(
        "check-key-good.toml",
        &format!(
            "[auth]\npublic_key_file = {:?}\n",
            fixture("rsa_public.pem")
        ),
    );
    let (code, out, errs) = herald_check(&good);
    assert_eq!((code, errs.as_str()), (0, ""), "{out}");
    assert_eq!(out, format!("ok: {}\n", good.display()));

    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-such-key.pem");
    let file = temp_file(
        "check-key-missing.toml",
        &format!("[auth]\nhs256_secret = \"s\"\npublic_key_file = {missing:?}\n"),
    );
    let (code, out, errs) = herald_check(&file);
    assert_eq!((code, out.as_str()), (1, ""), "{errs}");
    assert!(
        errs.starts_with(&format!(
            "error: {}: line 3: cannot read auth.public_key_file {}",
            file.display(),
            missing.display()
        )),
        "{errs}"
    );
    assert_eq!(errs.lines().count(), 1, "{errs}");

    // A file that is there but holds no key.
    let file = temp_file(
        "check-key-invalid.toml",
        &format!("[auth]\npublic_key_file = {:?}\n", fixture("README.md")),
    );
    let (code, _, errs) = herald_check(&file);
    assert_eq!(code, 1, "{errs}");
    assert!(errs.contains("line 2: "), "{errs}");
    assert!(
        errs.contains("is not an RSA, EC (P-256) or Ed25519 public key in PEM"),
        "{errs}"
    );
}

/// Every error of the file is reported, one line each, in line order — not only the first.
#[test]
fn config_check_reports_every_error() {
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-such-key.pem");
    let file = temp_file(
        "check-every-error.toml",
        &format!(
            "heartbeat = \"soon\"\n\
             [session]\n\
             buffer_msgs = 10\n\
             ttl = \"1s\"\n\
             [auth]\n\
             public_key_file = {missing:?}\n\
             [auth.anonymous]\n\
             subscribe = [\"a/**b\"]\n\
             [[topics]]\n\
             pattern = \"x\"\n\
             max_deliveries = 0\n"
        ),
    );
    let (code, out, errs) = herald_check(&file);
    assert_eq!((code, out.as_str()), (1, ""), "{errs}");
    let lines: Vec<&str> = errs.lines().collect();
    let expect = [
        (1, "`heartbeat`"),
        (3, "unknown key `buffer_msgs` in [session]"),
        (6, "cannot read auth.public_key_file"),
        (8, "auth.anonymous.subscribe"),
        (11, "`topics[0].max_deliveries` must be at least 1"),
    ];
    assert_eq!(lines.len(), expect.len(), "{errs}");
    for (got, (line, text)) in lines.iter().zip(expect) {
        let prefix = format!("error: {}: line {line}: ", file.display());
        assert!(
            got.starts_with(&prefix),
            "{got:?} should start with {prefix:?}"
        );
        assert!(got.contains(text), "{got:?} should contain {text:?}");
    }
    // The library's one-error API gives the first of them.
    let e = Config::from_file(&file).unwrap_err();
    assert_eq!(e.line(), Some(1), "{e}");
}
