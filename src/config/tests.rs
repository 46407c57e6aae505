//! Unit tests of the internals: the schema reader on its own (without validation) and the
//! line index.

use std::time::Duration;

use super::schema::{parse_document, read_config};
use super::*;

/// Reads `src` through the schema only: no support check, no validation.
fn read(src: &str) -> Result<Config, ConfigError> {
    let doc = parse_document(src)?;
    let (config, _, errors) = read_config(src, doc.get_ref());
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(config),
    }
}

#[test]
fn every_section_parses_fully() {
    let c = read(
        r#"
[limits]
max_connections_per_ip = 3
publish_rate = 4
max_pending_requests = 5

[auth]
hs256_secret = "k"
origins = []
anonymous = { subscribe = ["public/**"] }

[[topics]]
pattern = "a/**"
history = 10
persist = true

[[topics]]
pattern = "b"
ack_wait = "250ms"

[cluster]
redis = "rediss://host:6380/0"
"#,
    )
    .unwrap();
    assert_eq!(c.limits.max_connections_per_ip, 3);
    assert_eq!(c.limits.publish_rate, 4);
    assert_eq!(c.limits.max_pending_requests, 5);
    let auth = c.auth.unwrap();
    assert_eq!(auth.hs256_secret.as_deref(), Some("k"));
    assert_eq!(auth.public_key_file, None);
    assert_eq!(auth.origins, Some(vec![]));
    assert!(auth.api_keys.is_empty() && auth.admin_keys.is_empty());
    assert_eq!(auth.anonymous.subscribe, vec!["public/**".to_string()]);
    assert!(auth.anonymous.publish.is_empty());
    assert_eq!(c.topics.len(), 2);
    assert_eq!((c.topics[0].history, c.topics[0].persist), (10, true));
    assert_eq!(c.topics[1].ack_wait, Duration::from_millis(250));
    assert_eq!(c.topics[1].max_deliveries, 5);
    assert_eq!(c.cluster.unwrap().redis, vec!["rediss://host:6380/0"]);
}

#[test]
fn auth_without_anonymous_grants_nothing() {
    let c = read("[auth]\napi_keys = [\"k\"]").unwrap();
    assert_eq!(c.auth.unwrap().anonymous, Permissions::default());
}

#[test]
fn schema_reader_does_not_validate() {
    // Ranges are `validate`'s job, so the reader accepts them; `from_toml_str` does not.
    let c = read("max_frame = 1").unwrap();
    assert_eq!(c.max_frame, 1);
    assert!(c.validate().is_err());
}

#[test]
fn validation_errors_fall_back_to_the_enclosing_table_line() {
    // The key is absent from the file, so the error points at its table.
    let src = "\n[session]\nttl = \"1s\"\n";
    let doc = parse_document(src).unwrap();
    let (_, lines, errors) = read_config(src, doc.get_ref());
    assert!(errors.is_empty());
    assert_eq!(lines.line_of("session.ttl"), Some(3));
    assert_eq!(lines.line_of("session.buffer_messages"), Some(2));
    assert_eq!(lines.line_of("heartbeat"), None);
    assert_eq!(lines.line_of("topics[0].pattern"), None);
}
