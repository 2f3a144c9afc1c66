//! `openapi.yaml` and the router describe the same routes.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

fn spec_routes() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let spec: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                out.insert((m.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

#[test]
fn the_spec_lists_exactly_the_routes_of_the_router() {
    let router: BTreeSet<(String, String)> = streampca::http::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(spec_routes(), router);
}

#[tokio::test]
async fn every_route_in_the_spec_is_served() {
    let app = spawn_app().await;
    for (method, path) in spec_routes() {
        let url = app.url(&path.replace("{name}", "probe"));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.client.request(m, url).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        assert_ne!(
            code.as_deref(),
            Some("route_not_found"),
            "{method} {path}: {status}"
        );
        assert_ne!(
            code.as_deref(),
            Some("method_not_allowed"),
            "{method} {path}: {status}"
        );
    }
}
