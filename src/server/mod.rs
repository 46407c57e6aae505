//! The network front: one listener serving the WebSocket endpoint, the HTTP API and the web
//! app, and the graceful shutdown that ties them together.
//!
//! Shutdown (SIGINT/SIGTERM in the binary, [`ShutdownHandle::shutdown`] for embedders): stop
//! accepting, tell every WebSocket client `bye` and close with 1001, give writers a bounded
//! time to flush, then return.

mod http;
mod web;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::{Config, ConfigError};
use crate::metrics::{Counters, Exporter, Metrics, RateMeter};
use crate::reload::Reload;

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
    metrics: Arc<Metrics>,
}

impl ReloadHandle {
    /// Validates `config` and applies what can change at run time (see `crate::reload`),
    /// logging each change; on an error logs it and keeps the configuration in effect.
    pub fn reload(&self, config: Config) -> Result<Reload, ConfigError> {
        match self.bus.reload(config) {
            Ok(report) => {
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
    /// Binds the configured address (`127.0.0.1:0` picks a free port).
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        Self::with_bus(Bus::new(config)).await
    }

    /// Binds a server around an existing bus (its config gives the address).
    pub async fn with_bus(bus: Bus) -> std::io::Result<Server> {
        let listener = TcpListener::bind(bus.config().listen).await?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
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
        let shutdown = state.shutdown.clone();
        // TCP_NODELAY: a writer flushes each batch at once. With Nagle's algorithm a small
        // flush waits for the ACK of the previous one, which a subscriber that never sends
        // delays by up to 40 ms (delayed ACK): that was Herald's p99 at any fixed rate.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
        let result = serve.into_future().await;
        // Stopped accepting. Connections see the same token, send `bye` and close.
        state.shutdown.cancel();
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
        maintenance.abort();
        sampler.abort();
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
