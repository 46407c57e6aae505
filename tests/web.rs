//! The embedded web app (`web/`): what `GET /…` serves, with which content types, and what it
//! keeps out (node_modules, tests, lock files). Its behaviour in a browser is tested by
//! `tests/browser/` (headless Chromium) and the client's by `web/test/` (node --test).

mod common;

use common::*;

async fn get(srv: &TestServer, path: &str) -> (u16, String, String) {
    let r = http().get(srv.http(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

#[tokio::test]
async fn serves_the_client_and_the_app_modules() {
    let srv = TestServer::start().await;
    let (status, ctype, body) = get(&srv, "/herald.js").await;
    assert_eq!(status, 200);
    assert!(ctype.contains("javascript"), "{ctype}");
    assert!(body.contains("export function connect"));
    // A module imported cross-origin needs CORS.
    let r = http()
        .get(srv.http("/herald.js"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    let (status, ctype, body) = get(&srv, "/herald.d.ts").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(body.contains("export declare function connect"));

    for module in [
        "/app/main.js",
        "/app/chat.js",
        "/app/inspector.js",
        "/app/dashboard.js",
        "/app/ui.js",
        "/vendor/uplot/uPlot.esm.js",
    ] {
        let (status, ctype, _) = get(&srv, module).await;
        assert_eq!(status, 200, "{module}");
        assert!(ctype.contains("javascript"), "{module}: {ctype}");
    }
    let (status, _, license) = get(&srv, "/vendor/uplot/LICENSE").await;
    assert_eq!(status, 200);
    assert!(license.contains("MIT"));

    let (_, _, page) = get(&srv, "/").await;
    for section in [
        "view-chat",
        "view-inspector",
        "view-dashboard",
        "/app/main.js",
    ] {
        assert!(page.contains(section), "the page has {section}");
    }
}

#[tokio::test]
async fn keeps_tests_and_dependencies_out() {
    let srv = TestServer::start().await;
    for path in [
        "/test/client.test.js",
        "/test/server.js",
        "/package-lock.json",
        "/node_modules/ws/package.json",
    ] {
        let (status, ctype, body) = get(&srv, path).await;
        assert_eq!(status, 404, "{path} must not be served");
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        assert!(body.contains("not_found"), "{path}: {body}");
    }
}
