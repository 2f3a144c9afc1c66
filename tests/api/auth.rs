//! API keys: every route × {no key, read key, write key}, and `/metrics` policy.

use reqwest::{Method, StatusCode};
use serde_json::json;
use streampca::config::Secret;
use streampca::http::auth::{required_access, Access};

use crate::helpers::{spawn_app_with, TestApp};

const WRITE: &str = "write-key-0123456789";
const READ: &str = "read-key-9876543210";

async fn app_with_keys(metrics_auth: bool) -> TestApp {
    spawn_app_with(|mut s| {
        s.auth.api_key = Some(Secret::from(WRITE));
        s.auth.read_api_key = Some(Secret::from(READ));
        s.auth.metrics_auth = metrics_auth;
        s
    })
    .await
}

/// What each route of the router needs: written out here so that a change to
/// `required_access` shows up as a failing test, and checked to cover `ROUTES`.
const EXPECTED: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Open),
    ("GET", "/readyz", Access::Open),
    ("GET", "/metrics", Access::Open),
    ("GET", "/v1/models", Access::Read),
    ("POST", "/v1/models", Access::Write),
    ("GET", "/v1/models/{name}", Access::Read),
    ("DELETE", "/v1/models/{name}", Access::Write),
    ("POST", "/v1/models/{name}/samples", Access::Write),
    ("GET", "/v1/models/{name}/components", Access::Read),
    ("POST", "/v1/models/{name}/project", Access::Read),
    ("GET", "/v1/models/{name}/limits", Access::Read),
    // Not routes of this branch: unknown routes need the write key.
    ("GET", "/v1/models/{name}/snapshot", Access::Write),
    ("PUT", "/v1/models/{name}/snapshot", Access::Write),
];

#[test]
fn the_permission_table_covers_every_route() {
    for (m, p) in streampca::http::ROUTES {
        let e = EXPECTED.iter().find(|(em, ep, _)| em == m && ep == p);
        let Some((_, _, want)) = e else {
            panic!("{m} {p} is missing from EXPECTED");
        };
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(required_access(&method, Some(p), false), *want, "{m} {p}");
    }
}

async fn send(app: &TestApp, method: &str, path: &str, key: Option<&str>) -> StatusCode {
    let url = app.url(&path.replace("{name}", "m"));
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req = match (method, path) {
        ("POST", "/v1/models") => req.json(&json!({"name": "other", "dim": 3, "components": 1})),
        ("POST", "/v1/models/{name}/samples") => req.json(&json!({"x": [[1.0, 2.0, 3.0]]})),
        ("POST", "/v1/models/{name}/project") => req.json(&json!({"x": [[1.0, 2.0, 3.0]]})),
        _ => req,
    };
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn every_route_answers_no_key_read_key_and_write_key_as_its_permission_says() {
    // Arrange
    let app = app_with_keys(false).await;
    let r = app
        .client
        .post(app.url("/v1/models"))
        .bearer_auth(WRITE)
        .json(&json!({"name": "m", "dim": 3, "components": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let denied = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN];
    // DELETE last, so the other routes find the model.
    let mut table = EXPECTED.to_vec();
    table.sort_by_key(|(m, _, _)| *m == "DELETE");
    for (method, path, need) in table {
        // Act
        let none = send(&app, method, path, None).await;
        let read = send(&app, method, path, Some(READ)).await;
        let bad = send(&app, method, path, Some("not-a-key")).await;
        let write = send(&app, method, path, Some(WRITE)).await;
        // Assert
        let what = format!("{method} {path}: none {none}, read {read}, bad {bad}, write {write}");
        match need {
            Access::Open => {
                assert!(!denied.contains(&none), "{what}");
                assert!(!denied.contains(&read), "{what}");
                assert!(!denied.contains(&write), "{what}");
            }
            Access::Read => {
                assert_eq!(none, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(bad, StatusCode::UNAUTHORIZED, "{what}");
                assert!(!denied.contains(&read), "{what}");
                assert!(!denied.contains(&write), "{what}");
            }
            Access::Write => {
                assert_eq!(none, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(bad, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(read, StatusCode::FORBIDDEN, "{what}");
                assert!(!denied.contains(&write), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn a_401_says_bearer_and_has_the_error_shape() {
    let app = app_with_keys(false).await;
    let r = app.client.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = app
        .client
        .get(app.url("/v1/models"))
        .header("authorization", format!("Basic {READ}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_can_be_made_to_need_the_read_key() {
    let app = app_with_keys(true).await;
    assert_eq!(
        send(&app, "GET", "/metrics", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, "GET", "/metrics", Some(READ)).await,
        StatusCode::OK
    );
    assert_eq!(send(&app, "GET", "/healthz", None).await, StatusCode::OK);
}

#[tokio::test]
async fn without_keys_every_route_is_open() {
    let app = spawn_app_with(|s| s).await;
    assert_eq!(send(&app, "GET", "/v1/models", None).await, StatusCode::OK);
}

#[tokio::test]
async fn the_binary_refuses_a_key_no_header_can_carry_at_start_up() {
    // Before: the server started and answered every request 401.
    let dir = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_streampca"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "clé-secrète-0123456789",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child)
        .await
        .expect("the server started instead of refusing the key")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api_key contains the non-ASCII character U+00E9"),
        "{stderr}"
    );
    assert!(!stderr.contains("secr"), "the key leaked: {stderr}");
}

#[tokio::test]
async fn a_short_key_is_refused_unless_allowed_and_then_works() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |allow: bool| {
        let mut s = streampca::config::Settings {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        s.auth.api_key = Some(Secret::from("short"));
        s.auth.allow_short_api_keys = allow;
        s
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = streampca::run(listener, settings(false), std::future::pending());
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), refused)
        .await
        .expect("the service started with a 5-byte key")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("api_key is 5 bytes long"),
        "{err:#}"
    );
    let app = spawn_app_with(|s| {
        let mut s2 = settings(true);
        s2.data_dir = s.data_dir;
        s2
    })
    .await;
    assert_eq!(
        send(&app, "GET", "/v1/models", Some("short")).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/v1/models", None).await,
        StatusCode::UNAUTHORIZED
    );
}
