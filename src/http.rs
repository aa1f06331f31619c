//! Serving the HTTP router ourselves rather than with `axum::serve`,
//! which gives hyper no timer: without one, hyper's header-read timeout
//! never applies, and a client that sends its headers slowly holds a
//! connection for as long as it likes. Here:
//! - HTTP/1.1 with keep-alive and a header-read timeout;
//! - at most `max_connections` connections at once: past it, the accept
//!   loop waits for one to close, and new clients wait in the kernel's
//!   listen backlog instead of costing a task and a buffer each;
//! - each request carries its peer address (`ConnectInfo`), which the
//!   per-address rate limit counts;
//! - on shutdown the listener closes at once, so new connections are
//!   refused (which a client can always retry), and requests in flight run
//!   to their end. Open connections then get a lame-duck second: each
//!   request on them is still served, answered with `Connection: close`,
//!   so the client moves to a new connection instead of having an idle
//!   one closed under a request it is sending. The caller bounds how long
//!   all this may take.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderValue, header},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tower::ServiceExt;

/// How long a connection open at shutdown may carry on serving requests.
const LAME_DUCK: Duration = Duration::from_secs(1);

/// What one client may hold.
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for
/// the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let (drain, draining) = watch::channel(false);
    let closing = Arc::new(AtomicBool::new(false));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = async {
                let slot = open.clone().acquire_owned().await.expect("never closed");
                listener.accept().await.map(|accepted| (accepted, slot))
            } => {
                let ((stream, peer), slot) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset while
                        // queued: wait a moment rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let closing = closing.clone();
                let service = app
                    .clone()
                    .map_request(move |mut req: hyper::Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                        req
                    })
                    .map_response(move |mut res: axum::response::Response| {
                        if closing.load(Ordering::Relaxed) {
                            res.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        res
                    });
                let connection =
                    http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let mut draining = draining.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        // The guard `wait_for` returns is not `Send`; drop it
                        // before awaiting again.
                        _ = async { draining.wait_for(|d| *d).await.is_ok() } => {}
                    }
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = tokio::time::sleep(LAME_DUCK) => {}
                    }
                    // Finishes the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
        }
    }
    drop(listener);
    closing.store(true, Ordering::Relaxed);
    let _ = drain.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}
