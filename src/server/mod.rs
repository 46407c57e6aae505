//! The network front: one listener serving the WebSocket endpoint, the HTTP API and the web
//! app, and the graceful shutdown that ties them together.
//!
//! Shutdown (SIGINT/SIGTERM in the binary, [`ShutdownHandle::shutdown`] for embedders): stop
//! accepting, tell every WebSocket client `bye` and close with 1001, give writers a bounded
//! time to flush, then return.

mod control;
mod cors;
mod credentials;
mod http;
mod http_auth;
mod reply;
mod sse;
mod web;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::auth::{Auth, PerIp};
use crate::backend::Backend;
use crate::bus::Bus;
use crate::config::{Config, ConfigError};
use crate::metrics::{Counters, Exporter, Metrics, RateMeter};
use crate::reload::{Live, Reload};

/// How long connections get to say goodbye and flush on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request handler and connection shares.
pub(crate) struct AppState {
    pub bus: Bus,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The socket side's instruments (see `crate::metrics`).
    pub metrics: Arc<Metrics>,
    /// `GET /metrics`.
    pub exporter: Exporter,
    /// Rates for `GET /v1/stats`.
    pub rates: Arc<RateMeter>,
    /// Tokens, permissions, API keys, Origin allow-list (`[auth]`), replaced whole by a
    /// reload: read it per check, never keep it.
    pub auth: Live<Auth>,
    /// WebSocket connections per client address.
    pub per_ip: Arc<PerIp>,
    /// The application's backend: proxies and webhooks (`[proxy]`, `[[webhooks]]`).
    pub backend: Arc<Backend>,
}

impl AppState {
    /// The configuration in effect; a reload may replace it, so read it when needed.
    pub fn config(&self) -> Arc<Config> {
        self.bus.config()
    }
}

/// A bound server. `bind` then `run` (or `spawn`).
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// Ends a running server from elsewhere.
#[derive(Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

/// Reloads the configuration of a running server; connections stay up.
#[derive(Clone)]
pub struct ReloadHandle {
    bus: Bus,
    auth: Live<Auth>,
    metrics: Arc<Metrics>,
}

impl ReloadHandle {
    /// Validates `config` and applies what can change at run time (see `crate::reload`),
    /// logging each change; on an error logs it and keeps the configuration in effect.
    pub fn reload(&self, config: Config) -> Result<Reload, ConfigError> {
        // `[auth]` is compiled (key files read, patterns checked) before anything changes.
        let auth = match Auth::reloaded(&self.auth.load(), config.auth.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                let e = ConfigError::invalid("auth", e.to_string());
                self.refused(&e);
                return Err(e);
            }
        };
        let listen = config.listen;
        match self.bus.reload(config) {
            Ok(report) => {
                if !auth.is_enabled() && !listen.ip().is_loopback() {
                    tracing::warn!("SECURITY WARNING: [auth] removed on a non-loopback address");
                }
                // New API keys and anonymous permissions apply to the next HTTP request and
                // the next connection; tokens are verified with the new keys from now on.
                self.auth.store(auth);
                self.metrics.reload(true);
                for c in &report.applied {
                    tracing::info!(key = %c.key, old = %c.old, new = %c.new, "config changed");
                }
                for c in &report.needs_restart {
                    tracing::warn!(
                        key = %c.key, old = %c.old, new = %c.new,
                        "config change needs a restart; keeping the old value"
                    );
                }
                tracing::info!(
                    applied = report.applied.len(),
                    needs_restart = report.needs_restart.len(),
                    "configuration reloaded"
                );
                Ok(report)
            }
            Err(e) => {
                self.refused(&e);
                Err(e)
            }
        }
    }

    /// Records a reload that failed before it reached the server (the file did not load).
    pub fn refused(&self, e: &ConfigError) {
        self.metrics.reload(false);
        tracing::error!(error = %e, "configuration not reloaded; keeping the one in effect");
    }
}

impl Server {
    /// Opens the durable store (with a data directory) and binds the configured address
    /// (`127.0.0.1:0` picks a free port).
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let bus = tokio::task::spawn_blocking(move || Bus::open(config))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        Self::with_bus(bus).await
    }

    /// Binds a server around an existing bus (its config gives the address).
    pub async fn with_bus(bus: Bus) -> std::io::Result<Server> {
        let config = bus.config();
        let auth = Auth::start(config.auth.as_ref())
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        if !config.listen.ip().is_loopback() && !auth.is_enabled() {
            tracing::warn!(
                listen = %config.listen,
                "SECURITY WARNING: listening on a non-loopback address without [auth]: \
                 ANYONE who can reach this address may publish and subscribe to anything. \
                 Configure [auth] (tokens, api_keys) or listen on 127.0.0.1."
            );
        }
        let per_ip = PerIp::new();
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        // Its own token: the webhooks outlive the connections' shutdown to send their last
        // events (see `run`).
        let backend = Backend::new(&config, &bus, metrics.clone(), CancellationToken::new())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let rates = Arc::new(RateMeter::new(
            std::time::Instant::now(),
            Counters::read(&bus, &metrics),
        ));
        Ok(Server {
            state: Arc::new(AppState {
                exporter: Exporter::new(bus.clone(), metrics.clone()),
                bus,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                metrics,
                rates,
                per_ip,
                auth: Live::new(auth),
                backend: Arc::new(backend),
            }),
            listener,
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn bus(&self) -> Bus {
        self.state.bus.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.shutdown.clone())
    }

    /// Applies new configurations to the running server (the binary calls it on SIGHUP).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            bus: self.state.bus.clone(),
            auth: self.state.auth.clone(),
            metrics: self.state.metrics.clone(),
        }
    }

    /// Serves until the shutdown handle fires, then drains (bounded) and returns.
    pub async fn run(self) -> std::io::Result<()> {
        let Server {
            state, listener, ..
        } = self;
        let maintenance = state.bus.spawn_maintenance(state.shutdown.clone());
        let sampler = crate::metrics::spawn_sampler(
            state.bus.clone(),
            state.metrics.clone(),
            state.rates.clone(),
            state.shutdown.clone(),
        );
        let app = http::router(state.clone());
        let http_conns = TaskTracker::new();
        let result = accept_loop(
            &state,
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
            &http_conns,
        )
        .await;
        // Stopped accepting. Connections see the same token, send `bye` and close.
        state.shutdown.cancel();
        http_conns.close();
        state.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = state.bus.stats().connections.load(Ordering::Relaxed),
                "drain timed out; dropping remaining connections"
            );
        }
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, http_conns.wait()).await;
        maintenance.abort();
        sampler.abort();
        state.bus.flush_store().await;
        state.backend.shutdown().await;
        tracing::info!("stopped");
        result
    }

    /// Runs the server on a task; returns its address, a shutdown handle and the task.
    pub fn spawn(
        self,
    ) -> (
        SocketAddr,
        ShutdownHandle,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let addr = self.local_addr;
        let handle = self.shutdown_handle();
        (addr, handle, tokio::spawn(self.run()))
    }
}

/// Accepts TCP connections until shutdown and serves each with hyper's HTTP/1 server.
///
/// This is `axum::serve` plus a timer: every connection must send complete request
/// headers within `limits.handshake_timeout` (hyper's `header_read_timeout`, which also
/// covers a connection that sends nothing), so slow or silent clients cannot hold
/// sockets and memory indefinitely. Upgraded WebSocket connections then follow their
/// own heartbeat rules.
async fn accept_loop(
    state: &Arc<AppState>,
    listener: TcpListener,
    mut make: IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
    conns: &TaskTracker,
) -> std::io::Result<()> {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // Read per connection: a reload applies to the next one.
        let handshake = state.config().limits.handshake_timeout;
        let Ok(svc) = make.call(peer).await;
        let svc = TowerToHyperService::new(svc);
        let shutdown = state.shutdown.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
