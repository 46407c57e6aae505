//! Token keys beyond one static file (PROTOCOL.md §7, §9): a JWKS served by a real HTTP
//! server inside the test (RS256, ES256 and EdDSA keys chosen by `kid`, rotation, outages,
//! the unknown-kid refetch and its rate limit), several `public_key_files`, `issuer` and
//! `audience`, reloads, and `herald config check` on bad key settings. Keys are the fixed
//! pairs of `tests/fixtures/keys/`.

mod common;
#[path = "auth_keys/support.rs"]
mod support;

use std::time::{Duration, Instant};

use herald::config::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use common::{Raw, TestServer, config, get_text};
use support::{
    Jwks, accepted, claims, http_publish, jwk, jwks_config, key_file, refused, signed, token,
};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_checked_with_the_key_their_kid_names() {
    let jwks = Jwks::start(&["rsa-a", "ec-a", "ed-a"]).await;
    let server = TestServer::with_config(jwks_config(&jwks.url(), HOUR)).await;
    let addr = server.addr;
    assert_eq!(jwks.hits(), 1, "fetched once at start");
    for name in ["rsa-a", "ec-a", "ed-a"] {
        let t = token(name, Some(name), &claims());
        accepted(addr, &t, name).await;
        assert_eq!(http_publish(addr, &t).await, 200, "{name} over HTTP");
        // The upgrade's query carries it too.
        let mut c = Raw::connect(&format!("ws://{addr}/ws?token={t}")).await;
        c.hello().await;
        assert_eq!(c.publish("x/1", json!(1)).await["op"], "ok");
    }
    // Signed by another key than the one its kid names.
    let forged = token("rsa-b", Some("rsa-a"), &claims());
    let e = refused(addr, &forged, "rsa-b as rsa-a").await;
    assert!(e.contains("InvalidSignature"), "{e}");
    assert_eq!(http_publish(addr, &forged).await, 401);
    // The algorithm is the key's, never the token's.
    let confused = token("rsa-a", Some("ec-a"), &claims());
    let e = refused(addr, &confused, "RS256 with an EC kid").await;
    assert!(e.contains("verifies ES256 only"), "{e}");
    let jwk = serde_json::to_vec(&jwk("rsa-a")).unwrap();
    let hmac = signed(
        Algorithm::HS256,
        Some("rsa-a"),
        &claims(),
        &EncodingKey::from_secret(&jwk),
    );
    let e = refused(addr, &hmac, "HS256 with a JWKS kid").await;
    assert!(e.contains("HS256 are not accepted"), "{e}");
    // `alg: none`, by hand: refused before any key is looked up.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "rsa-a"})),
        b64(claims())
    );
    refused(addr, &none, "alg none").await;
    // A token without a kid has no static key to try here.
    let e = refused(addr, &token("ed-a", None, &claims()), "no kid").await;
    assert!(e.contains("EdDSA are not accepted"), "{e}");
}

#[tokio::test]
async fn a_rotated_in_kid_is_fetched_on_first_sight_and_a_rotated_out_kid_is_refused() {
    let jwks = Jwks::start(&["rsa-a"]).await;
    let server = TestServer::with_config(jwks_config(&jwks.url(), HOUR)).await;
    let addr = server.addr;
    accepted(addr, &token("rsa-a", Some("rsa-a"), &claims()), "rsa-a").await;
    // The IdP rotates: rsa-b replaces rsa-a. The first rsa-b token asks for a refetch and
    // waits for it (jwks_refresh is an hour away).
    jwks.serve(&["rsa-b"]);
    accepted(addr, &token("rsa-b", Some("rsa-b"), &claims()), "rsa-b").await;
    assert_eq!(jwks.hits(), 2);
    // That fetch replaced the set whole: rsa-a is gone. Its unknown kid asks again within
    // 10 s of the last ask, which is not honoured: refused at once, no request.
    let started = Instant::now();
    let e = refused(addr, &token("rsa-a", Some("rsa-a"), &claims()), "rsa-a").await;
    assert!(e.contains("unknown key id 'rsa-a'"), "{e}");
    let e = refused(addr, &token("ec-a", Some("ec-new"), &claims()), "ec-new").await;
    assert!(e.contains("unknown key id 'ec-new'"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "no wait");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(jwks.hits(), 2, "at most one refetch per 10 s");
    accepted(
        addr,
        &token("rsa-b", Some("rsa-b"), &claims()),
        "rsa-b again",
    )
    .await;
}

#[tokio::test]
async fn the_periodic_refresh_drops_a_removed_kid() {
    let jwks = Jwks::start(&["rsa-a", "ec-a"]).await;
    let server = TestServer::with_config(jwks_config(&jwks.url(), Duration::from_secs(1))).await;
    let addr = server.addr;
    let old = token("rsa-a", Some("rsa-a"), &claims());
    accepted(addr, &old, "before").await;
    jwks.serve(&["ec-a"]);
    let seen = jwks.hits();
    jwks.wait_hits(seen + 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused(addr, &old, "after the refresh").await;
    assert_eq!(http_publish(addr, &old).await, 401);
    accepted(addr, &token("ec-a", Some("ec-a"), &claims()), "kept").await;
}

#[tokio::test]
async fn the_last_good_set_is_kept_while_the_jwks_is_down_or_answers_garbage() {
    let jwks = Jwks::start(&["ed-a"]).await;
    let server = TestServer::with_config(jwks_config(&jwks.url(), Duration::from_secs(1))).await;
    let addr = server.addr;
    let t = token("ed-a", Some("ed-a"), &claims());
    accepted(addr, &t, "up").await;
    let bad: [(u16, &str); 4] = [
        (200, "<html>oops</html>"),
        (200, r#"{"keys":[]}"#),
        (
            200,
            r#"{"keys":[{"kty":"oct","kid":"ed-a","k":"c2VjcmV0"}]}"#,
        ),
        (503, "down for maintenance"),
    ];
    for (status, body) in bad {
        jwks.answer(status, body);
        let seen = jwks.hits();
        jwks.wait_hits(seen + 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        accepted(addr, &t, &format!("after {status} {body}")).await;
    }
    jwks.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    accepted(addr, &t, "with the JWKS server gone").await;
    let metrics = get_text(server.http("/metrics")).await;
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_jwks_fetches_total{result=\"failed\"} "))
        .unwrap_or_else(|| panic!("no failed fetch count in {metrics}"));
    assert!(failed.trim().parse::<u64>().unwrap() >= 4, "{failed}");
}

#[tokio::test]
async fn a_first_fetch_that_fails_stops_the_start_unless_another_key_verifies() {
    let jwks = Jwks::start(&["rsa-a"]).await;
    jwks.answer(503, "not yet");
    let err = herald::Server::bind(jwks_config(&jwks.url(), HOUR))
        .await
        .err()
        .expect("no key at all: refused");
    let text = err.to_string();
    assert!(text.contains("cannot fetch the JWKS from"), "{text}");
    assert!(text.contains("503"), "{text}");

    // With an HS256 secret as well, the server starts; the JWKS comes later, and the first
    // token with its kid fetches it.
    let mut c = jwks_config(&jwks.url(), HOUR);
    if let Some(a) = c.auth.as_mut() {
        a.hs256_secret = Some("a-secret-for-this-test".into());
    }
    let server = TestServer::with_config(c).await;
    let hs = signed(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(b"a-secret-for-this-test"),
    );
    accepted(server.addr, &hs, "HS256").await;
    jwks.serve(&["rsa-a"]);
    accepted(
        server.addr,
        &token("rsa-a", Some("rsa-a"), &claims()),
        "rsa-a",
    )
    .await;
}

#[tokio::test]
async fn public_key_files_accept_every_listed_key() {
    let mut c = config();
    c.auth = Some(AuthConfig {
        public_key_file: Some(key_file("ed-a.pub.pem")),
        public_key_files: vec![key_file("rsa-a.pub.pem"), key_file("rsa-b.pub.pem")],
        ..AuthConfig::default()
    });
    let server = TestServer::with_config(c).await;
    for name in ["rsa-a", "rsa-b", "ed-a"] {
        accepted(server.addr, &token(name, None, &claims()), name).await;
        // Without a JWKS a kid picks nothing: the static keys are tried, as before.
        accepted(server.addr, &token(name, Some("any"), &claims()), name).await;
    }
    let e = refused(server.addr, &token("ec-a", None, &claims()), "ec-a").await;
    assert!(e.contains("ES256 are not accepted"), "{e}");

    // Beside a JWKS, a kid it does not know may still be a static key's.
    let jwks = Jwks::start(&["ec-a"]).await;
    let mut c = jwks_config(&jwks.url(), HOUR);
    if let Some(a) = c.auth.as_mut() {
        a.public_key_files = vec![key_file("rsa-a.pub.pem")];
    }
    let server = TestServer::with_config(c).await;
    accepted(server.addr, &token("rsa-a", Some("x"), &claims()), "static").await;
    accepted(server.addr, &token("rsa-a", None, &claims()), "static").await;
    accepted(server.addr, &token("ec-a", Some("ec-a"), &claims()), "jwks").await;
    refused(
        server.addr,
        &token("rsa-b", Some("y"), &claims()),
        "neither",
    )
    .await;
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_set() {
    let secret = "issuer-audience-secret";
    let hs = |claims: Value| {
        signed(
            Algorithm::HS256,
            None,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    let with = |extra: Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut c = config();
    c.auth = Some(AuthConfig {
        hs256_secret: Some(secret.into()),
        issuer: Some("https://idp.test".into()),
        audience: Some(vec!["herald".into(), "herald-2".into()]),
        ..AuthConfig::default()
    });
    let server = TestServer::with_config(c).await;
    let addr = server.addr;
    let good = json!({"iss": "https://idp.test", "aud": "herald"});
    accepted(addr, &hs(with(good)), "good").await;
    let several = json!({"iss": "https://idp.test", "aud": ["other", "herald-2"]});
    accepted(addr, &hs(with(several)), "one of several aud").await;
    for (extra, why) in [
        (
            json!({"iss": "https://evil.test", "aud": "herald"}),
            "wrong issuer",
        ),
        (json!({"aud": "herald"}), "no 'iss' claim"),
        (
            json!({"iss": "https://idp.test", "aud": "other"}),
            "wrong audience",
        ),
        (
            json!({"iss": "https://idp.test", "aud": ["a", "b"]}),
            "wrong audience",
        ),
        (json!({"iss": "https://idp.test"}), "no 'aud' claim"),
    ] {
        let t = hs(with(extra.clone()));
        let e = refused(addr, &t, &extra.to_string()).await;
        assert!(e.contains(why), "{extra}: {e}");
        assert_eq!(http_publish(addr, &t).await, 401, "{extra}");
    }

    // Not set: not checked (as before these settings existed).
    let mut c = config();
    c.auth = Some(AuthConfig {
        hs256_secret: Some(secret.into()),
        ..AuthConfig::default()
    });
    let server = TestServer::with_config(c).await;
    let any = json!({"iss": "https://evil.test", "aud": "other"});
    accepted(server.addr, &hs(with(any)), "unchecked").await;
}

#[tokio::test]
async fn a_reload_keeps_the_fetched_set_for_the_same_url_and_fetches_a_new_one() {
    let one = Jwks::start(&["rsa-a"]).await;
    let two = Jwks::start(&["rsa-b"]).await;
    let config = jwks_config(&one.url(), HOUR);
    let server = herald::Server::bind(config.clone()).await.unwrap();
    let reload = server.reload_handle();
    let (addr, handle, _task) = server.spawn();
    let a = token("rsa-a", Some("rsa-a"), &claims());
    let b = token("rsa-b", Some("rsa-b"), &claims());
    accepted(addr, &a, "rsa-a").await;

    // Same URL, another refresh interval: no fetch, same keys.
    let mut same = config.clone();
    if let Some(auth) = same.auth.as_mut() {
        auth.jwks_refresh = Duration::from_secs(600);
    }
    reload.reload(same).unwrap();
    accepted(addr, &a, "rsa-a after reload").await;
    assert_eq!(one.hits(), 1);

    // Another URL: fetched at once, in the background; tokens wait for it.
    reload.reload(jwks_config(&two.url(), HOUR)).unwrap();
    accepted(addr, &b, "rsa-b from the new URL").await;
    refused(addr, &a, "rsa-a, not at the new URL").await;
    assert_eq!(one.hits(), 1, "the old URL is not fetched again");
    handle.shutdown();
}

/// `herald config check` on a file: (exit code, stderr).
fn check(name: &str, auth: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("herald-auth-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, format!("[auth]\n{auth}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn config_check_refuses_bad_key_settings_with_their_line() {
    let good = format!(
        "jwks_url = \"http://127.0.0.1:9/jwks.json\"\njwks_refresh = \"1m\"\n\
         public_key_files = [{:?}, {:?}]\nissuer = \"i\"\naudience = \"a\"\n",
        key_file("rsa-a.pub.pem"),
        key_file("ed-a.pub.pem"),
    );
    // The check is offline: a JWKS URL nothing answers is not its business.
    assert_eq!(check("good.toml", &good), (0, String::new()));
    let missing = key_file("no-such.pem");
    let readme = key_file("make.sh");
    for (name, auth, line, says) in [
        (
            "https.toml",
            "jwks_url = \"https://idp/jwks\"".to_owned(),
            2,
            "must be an http:// URL",
        ),
        (
            "scheme.toml",
            "jwks_url = \"ftp://idp/jwks\"".to_owned(),
            2,
            "must be an http:// URL",
        ),
        (
            "url.toml",
            "jwks_url = \"not a url\"".to_owned(),
            2,
            "is not a URL",
        ),
        (
            "empty-url.toml",
            "jwks_url = \"\"".to_owned(),
            2,
            "cannot be empty",
        ),
        (
            "refresh.toml",
            "jwks_refresh = \"0s\"".to_owned(),
            2,
            "must be at least 1s",
        ),
        (
            "refresh-unit.toml",
            "jwks_refresh = 5".to_owned(),
            2,
            "without a unit",
        ),
        (
            "missing.toml",
            format!("hs256_secret = \"s\"\npublic_key_files = [{missing:?}]"),
            3,
            "cannot read auth.public_key_files",
        ),
        (
            "not-a-key.toml",
            format!(
                "public_key_files = [{:?}, {readme:?}]",
                key_file("ec-a.pub.pem")
            ),
            2,
            "is not an RSA, EC (P-256) or Ed25519 public key in PEM",
        ),
        (
            "aud-empty.toml",
            "audience = []".to_owned(),
            2,
            "cannot be an empty list",
        ),
        (
            "aud-type.toml",
            "audience = 5".to_owned(),
            2,
            "a string or an array of strings",
        ),
        (
            "iss.toml",
            "issuer = \" \"".to_owned(),
            2,
            "`auth.issuer` cannot be empty",
        ),
    ] {
        let (code, errs) = check(name, &auth);
        assert_eq!(code, 1, "{name}: {errs}");
        assert_eq!(errs.lines().count(), 1, "{name}: {errs}");
        assert!(errs.contains(&format!(": line {line}: ")), "{name}: {errs}");
        assert!(errs.contains(says), "{name}: {errs:?} should say {says:?}");
    }
}
