//! CORS on the HTTP API (PROTOCOL.md §8, "Browsers on other origins"): what a browser on another
//! origin is told, with and without `auth.origins`. (tests/browser/cors.test.js drives the
//! same from a real page.)

mod common;

use common::TestServer;
use herald::config::AuthConfig;
use reqwest::Method;

async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    common::http()
        .request(Method::OPTIONS, server.http(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn without_a_list_any_origin_is_allowed_without_credentials() {
    let server = TestServer::start().await;
    let r = preflight(&server, "/v1/publish", "https://app.example").await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    let allowed = header(&r, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(
        header(&r, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    let r = common::http()
        .post(server.http("/v1/publish"))
        .header("origin", "https://app.example")
        .json(&serde_json::json!({"topic": "a", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    // Errors carry it too (the page can read why).
    let r = common::http()
        .post(server.http("/v1/publish"))
        .header("origin", "https://app.example")
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    // Not a browser (no Origin), not the API: nothing added.
    let r = common::http()
        .get(server.http("/v1/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = common::http()
        .get(server.http("/healthz"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn with_a_list_listed_origins_get_credentials_and_others_nothing() {
    let mut config = common::config();
    config.auth = Some(AuthConfig {
        hs256_secret: Some("s3cret-s3cret-s3cret-s3cret-s3cret".into()),
        origins: Some(vec!["https://app.example".into()]),
        ..AuthConfig::default()
    });
    let server = TestServer::with_config(config).await;
    let r = preflight(&server, "/v1/events/s_x/sub", "https://app.example").await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(header(&r, "vary").unwrap().contains("origin"));

    let r = preflight(&server, "/v1/publish", "https://evil.example").await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // An event stream from an unlisted origin is refused before a session opens, as an upgrade.
    let r = common::http()
        .get(server.http("/v1/events?pattern=a"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // Other calls go on (their own credentials decide) but carry no CORS headers.
    let r = common::http()
        .get(server.http("/v1/stats"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}
