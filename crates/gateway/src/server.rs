//! Serving the router on a socket: plain HTTP/1.1 or TLS (rustls), with a deadline for
//! request headers, graceful shutdown, and the process hardening of invariant I2.
//!
//! `axum::serve` has no TLS and no header deadline, so connections are accepted here
//! and handed to hyper directly; the router is the same either way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a client may take to send its request headers (and finish a TLS
/// handshake) before the connection is dropped.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns off core dumps and attachment by other processes of the same user
/// (`PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0): a compromised neighbour cannot read the
/// log key or credentials out of this process's memory, and a crash leaves no dump.
pub fn harden_process() -> io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// A TLS acceptor for a PEM certificate chain and its PEM private key.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|_| format!("{}: no PEM private key in it", key_file.display()))?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| format!("TLS configuration: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// True when serving plain HTTP on `addr` would expose credentials to the network.
pub fn plain_http_is_exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`
/// resolves, then lets open connections finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, for instance: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        match &tls {
            None => serve_connection(stream, app, peer, &graceful),
            Some(tls) => {
                let tls = tls.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = connection(stream, app, peer);
                            if let Err(e) = watcher.watch(connection).await {
                                tracing::debug!(error = %e, "connection ended");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout were closed");
    }
}

fn serve_connection<I>(io: I, app: Router, peer: SocketAddr, graceful: &GracefulShutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = graceful.watch(connection(io, app, peer));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });
}

/// The address a request came from (rate limits key on it). Requests that did not
/// come through [`serve`] (tests calling the router directly) come from
/// `0.0.0.0:0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// The peer's IP address.
    pub fn ip(&self) -> std::net::IpAddr {
        self.0.ip()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Peer>()
            .copied()
            .unwrap_or(Peer(SocketAddr::from(([0, 0, 0, 0], 0)))))
    }
}

/// Proxies whose `X-Forwarded-For` is believed (a TLS terminator or load balancer in
/// front of the gateway). Behind one, every request's TCP peer is the proxy, so rate
/// limits per address would put every client in one bucket; with the proxy trusted,
/// the client is the address it reports. Nobody else's header is believed: a client
/// cannot choose its own address.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Trusts these networks (a single address is a network of one).
    pub fn new(networks: Vec<ipnet::IpNet>) -> Self {
        Self(networks)
    }

    /// Parses `203.0.113.7` or `10.0.0.0/8` style entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<ipnet::IpNet>()
                    .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{e:?} is not an address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For` values: from
    /// the right, each address a trusted proxy added is believed until one that is
    /// not a trusted proxy (the client); `peer` itself when it is not trusted. A
    /// malformed entry ends the walk at the last address believed.
    pub fn client(&self, peer: std::net::IpAddr, forwarded: &[&str]) -> std::net::IpAddr {
        let mut client = peer;
        if !self.trusts(peer) {
            return peer;
        }
        let entries = forwarded.iter().flat_map(|v| v.split(',')).map(str::trim);
        for entry in entries.collect::<Vec<_>>().into_iter().rev() {
            let parsed = entry
                .parse::<std::net::IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()));
            let Ok(ip) = parsed else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// `app` with each request's [`Peer`] taken from `X-Forwarded-For` when the request
/// came through one of `proxies`.
pub fn behind_proxies(app: Router, proxies: TrustedProxies) -> Router {
    let proxies = std::sync::Arc::new(proxies);
    app.layer(axum::middleware::from_fn(
        move |mut request: axum::extract::Request, next: axum::middleware::Next| {
            let proxies = proxies.clone();
            async move {
                if let Some(peer) = request.extensions().get::<Peer>().copied() {
                    let forwarded: Vec<&str> = request
                        .headers()
                        .get_all("x-forwarded-for")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    let client = proxies.client(peer.ip(), &forwarded);
                    request
                        .extensions_mut()
                        .insert(Peer(SocketAddr::new(client, peer.0.port())));
                }
                next.run(request).await
            }
        },
    ))
}

fn connection<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
) -> hyper::server::conn::http1::Connection<
    TokioIo<I>,
    TowerToHyperService<axum::middleware::AddExtension<Router, Peer>>,
>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::Layer::layer(&axum::Extension(Peer(peer)), app);
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_say_who_the_client_is() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.9"), &["203.0.113.5"]),
            ip("198.51.100.9")
        );
        // Through one trusted proxy.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &["203.0.113.5"]),
            ip("203.0.113.5")
        );
        // A client that sends its own header cannot pick its address: the proxy appends.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &["192.0.2.1, 203.0.113.5"]),
            ip("203.0.113.5")
        );
        // Through a chain of trusted proxies, across header lines.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &["203.0.113.5, 10.1.2.3", "10.9.9.9"]),
            ip("203.0.113.5")
        );
        // No header, or garbage: the proxy itself (or the last address believed).
        assert_eq!(proxies.client(ip("127.0.0.1"), &[]), ip("127.0.0.1"));
        assert_eq!(proxies.client(ip("127.0.0.1"), &["nonsense"]), ip("127.0.0.1"));
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &["nonsense, 10.0.0.7"]),
            ip("10.0.0.7")
        );
        // Ports and IPv6.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &["[2001:db8::1]:4711"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &["203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
    }
}
