//! Requests are held to a deadline and a concurrency limit: a client that never
//! finishes its body neither holds a slot forever nor blocks the others for long.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, StatusCode, header};
use support::*;
use vellum_archive::ports::LogStore as _;
use vellum_gateway::{Limits, RECORD_MEDIA_TYPE};

/// A request body whose bytes never arrive.
struct Stalled;

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

fn stalled_capture(credential: &str, declared: usize) -> Request<Body> {
    Request::post("/v1/records")
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .header(header::CONTENT_TYPE, RECORD_MEDIA_TYPE)
        .header(header::CONTENT_LENGTH, declared)
        .body(Body::new(Stalled))
        .unwrap()
}

#[tokio::test]
async fn a_stalled_body_times_out_and_a_full_gateway_answers_busy() {
    // The credential is checked before the body is read: enroll a device so that the
    // handler waits for the body.
    let f = fixture_with(Limits {
        max_concurrent_requests: 1,
        queue_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_millis(600),
        ..Limits::default()
    })
    .await;
    let (_key, credential) = enrolled_device(&f).await;
    let stalled = stalled_capture(&credential, 1000);
    let app = f.app.clone();
    let slow = tokio::spawn(async move { send(&app, stalled).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The one slot is taken: the next request waits its queue timeout, then gets 503.
    let busy = get(&f.app, "/healthz").await;
    assert_problem(&busy, StatusCode::SERVICE_UNAVAILABLE);

    // The stalled request is cut off at its deadline…
    assert_problem(&slow.await.unwrap(), StatusCode::REQUEST_TIMEOUT);
    // …and its slot is free again.
    assert_eq!(get(&f.app, "/healthz").await.0, StatusCode::OK);
    // Only the device's enrollment is in the log.
    assert_eq!(f.gateway.archive().log_store().log_size().await.unwrap(), 1);
}

#[tokio::test]
async fn buffered_capture_bytes_are_bounded_across_requests() {
    let f = fixture_with(Limits {
        max_capture_bytes: 64 * 1024,
        max_buffered_bytes: 64 * 1024,
        queue_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
        ..Limits::default()
    })
    .await;
    let (key, credential) = enrolled_device(&f).await;
    let app = f.app.clone();
    let holder = stalled_capture(&credential, 64 * 1024);
    let slow = tokio::spawn(async move { send(&app, holder).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The budget is held by the stalled body: another capture waits, then gets 503…
    let record = submission_of(&key, vellum_protocol::ids::DeviceId::parse(DEVICE).unwrap(), 1);
    let framed = frame(record.header.as_bytes(), record.body.sealed().unwrap().as_bytes());
    assert_problem(
        &capture(&f, Some(&credential), framed.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    // …while requests that hold no body go on.
    assert_eq!(get(&f.app, "/healthz").await.0, StatusCode::OK);
    slow.abort();
    let _ = slow.await;
    // Once the stalled request is gone, its share is back.
    assert_eq!(capture(&f, Some(&credential), framed).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_capture_without_content_length_is_refused() {
    let f = fixture().await;
    let (key, credential) = enrolled_device(&f).await;
    let record = submission_of(&key, vellum_protocol::ids::DeviceId::parse(DEVICE).unwrap(), 1);
    let request = Request::post("/v1/records")
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .header(header::CONTENT_TYPE, RECORD_MEDIA_TYPE)
        .body(Body::from(frame(
            record.header.as_bytes(),
            record.body.sealed().unwrap().as_bytes(),
        )))
        .unwrap();
    assert_problem(&send(&f.app, request).await, StatusCode::LENGTH_REQUIRED);
    // Only the device's enrollment is in the log.
    assert_eq!(f.gateway.archive().log_store().log_size().await.unwrap(), 1);
}

/// Serves `app` on a loopback port; returns its URL.
async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(vellum_gateway::server::serve(
        listener,
        app,
        None,
        std::future::pending(),
    ));
    url
}

/// Wrong sign-ins from `forwarded_for` over real HTTP; the statuses.
async fn sign_ins(url: &str, forwarded_for: &str, count: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..count {
        let answer = client
            .post(format!("{url}/v1/auth/login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded_for)
            .body(r#"{"username":"nobody","password":"wrong wrong wrong"}"#)
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    statuses
}

/// Behind a trusted proxy, each client has its own per-address budget; without the
/// proxy trusted, the header is ignored and everyone shares the proxy's.
#[tokio::test]
async fn per_address_limits_follow_a_trusted_proxy_and_ignore_everyone_else() {
    let limited = |f: Fixture| {
        drop(f.app);
        let gateway = std::sync::Arc::try_unwrap(f.gateway)
            .ok()
            .unwrap()
            .with_login_limits(2, 1000);
        vellum_gateway::router(std::sync::Arc::new(gateway))
    };
    let proxies = vellum_gateway::server::TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
    let trusted = serve_on_loopback(vellum_gateway::server::behind_proxies(
        limited(fixture().await),
        proxies,
    ))
    .await;
    assert_eq!(sign_ins(&trusted, "203.0.113.5", 3).await, [401, 401, 429]);
    assert_eq!(
        sign_ins(&trusted, "203.0.113.6", 1).await,
        [401],
        "another client has its own budget"
    );
    // A client's own header is not believed: the proxy's entry (rightmost) counts.
    assert_eq!(sign_ins(&trusted, "203.0.113.6, 203.0.113.5", 1).await, [429]);

    let untrusted = serve_on_loopback(limited(fixture().await)).await;
    assert_eq!(sign_ins(&untrusted, "203.0.113.5", 2).await, [401, 401]);
    assert_eq!(
        sign_ins(&untrusted, "203.0.113.6", 1).await,
        [429],
        "the header was believed"
    );
}
