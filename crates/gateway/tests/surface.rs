//! Invariant I2: the public listener serves exactly the operations of the committed
//! OpenAPI document, and nothing that helped attackers of other archivers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing;
use support::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// Every documented `(method, path)`.
fn operations() -> Vec<(Method, String)> {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((method, path.replace(['{', '}'], "")));
        }
    }
    out
}

#[test]
fn the_committed_openapi_document_is_the_one_the_code_generates() {
    let generated = vellum_gateway::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("VELLUM_WRITE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run `VELLUM_WRITE_OPENAPI=1 cargo test -p vellum-gateway --test surface` and commit it"
    );
}

/// A route-level refusal (no handler ran), as opposed to a handler's own answer.
fn refused_by_router(answer: &(StatusCode, String, String)) -> bool {
    answer.0 == StatusCode::METHOD_NOT_ALLOWED
        || (answer.0 == StatusCode::NOT_FOUND && answer.2.contains("no such route"))
}

#[tokio::test]
async fn every_documented_operation_is_served_and_every_other_method_refused() {
    let f = fixture().await;
    let operations = operations();
    assert!(operations.len() >= 8, "{operations:?}");
    for (method, path) in &operations {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let answer = send(&f.app, request).await;
        assert!(!refused_by_router(&answer), "{method} {path}: {answer:?}");
        for other in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            if operations.contains(&(other.clone(), path.clone())) {
                continue;
            }
            let request = Request::builder()
                .method(&other)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let answer = send(&f.app, request).await;
            assert_problem(&answer, StatusCode::METHOD_NOT_ALLOWED);
        }
    }
}

#[tokio::test]
async fn debug_and_management_probes_find_nothing() {
    let f = fixture().await;
    let probes = [
        "/heapdump",
        "/actuator/heapdump",
        "/management/heapdump",
        "/actuator/env",
        "/actuator",
        "/debug/pprof/",
        "/debug/vars",
        "/env",
        "/metrics",
        "/jolokia",
        "/trace",
        "/.env",
        "/.git/config",
        "/server-status",
        "/openapi.json",
        "/swagger-ui/",
        "/v1/records/",
        "/V1/records",
        "//v1/records",
    ];
    for probe in probes {
        for method in [Method::GET, Method::POST] {
            let request = Request::builder()
                .method(&method)
                .uri(probe)
                .body(Body::empty())
                .unwrap();
            let answer = send(&f.app, request).await;
            assert_problem(&answer, StatusCode::NOT_FOUND);
            assert!(refused_by_router(&answer), "{method} {probe}: {answer:?}");
        }
    }
}

#[tokio::test]
async fn a_route_missing_from_the_document_is_unreachable() {
    // Someone adds a handy endpoint and forgets the document: it answers nothing.
    let leaky = axum::Router::new()
        .route("/debug/pprof/heap", routing::get(|| async { "heap profile" }))
        .route("/healthz", routing::get(|| async { "ok" }));
    let guarded = vellum_gateway::documented_only(leaky);
    assert_problem(&get(&guarded, "/debug/pprof/heap").await, StatusCode::NOT_FOUND);
    assert_eq!(get(&guarded, "/healthz").await.0, StatusCode::OK);
}
