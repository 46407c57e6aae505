//! The application's backend, as Herald sees it (PROTOCOL.md §10): the proxies it asks
//! before a connection may connect, subscribe, publish or call `rpc` (`proxy`, with what a
//! connect answer grants in `grant`), and the webhooks it tells about sessions and topics
//! (`webhooks`), all over one pooled HTTP client (`client`).
//!
//! Above the bus (it observes the bus's events) and below the transports (which ask it).

pub mod client;
mod grant;
mod http1;
pub mod proxy;
pub mod webhooks;

use std::sync::Arc;

pub use client::{CallError, Client, Endpoint};
pub use proxy::{
    ConnectGrant, ConnectRequest, Denied, FORWARDED_HEADERS, Proxy, ProxyError, PublishRequest,
    RouteRef, RpcRequest, SubscribeRequest,
};
pub use webhooks::Webhooks;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::Metrics;

/// `[proxy]` and `[[webhooks]]`, compiled; both are read at start only (a reload keeps them).
pub struct Backend {
    /// `None`: no `[proxy]`: nothing is asked.
    pub proxy: Option<Proxy>,
    /// `None`: no `[[webhooks]]`: nothing is told.
    webhooks: Option<Arc<Webhooks>>,
}

impl Backend {
    /// Compiles the backend's settings and starts what runs in the background (the webhook
    /// senders, which observe `bus`, until `cancel`). The error names the key.
    pub fn new(
        config: &Config,
        bus: &Bus,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Result<Backend, String> {
        let client = Client::new();
        let proxy = config
            .proxy
            .as_ref()
            .map(|p| Proxy::new(p, client.clone(), metrics.clone()))
            .transpose()?;
        let webhooks = if config.webhooks.is_empty() {
            None
        } else {
            let w = Webhooks::start(&config.webhooks, client, metrics, cancel.child_token())?;
            bus.set_observer(w.clone());
            Some(w)
        };
        Ok(Backend { proxy, webhooks })
    }

    /// Sends what the webhooks still hold (for at most `webhooks::FLUSH`), then stops them.
    pub async fn shutdown(&self) {
        if let Some(w) = &self.webhooks {
            w.shutdown().await;
        }
    }
}

impl Drop for Backend {
    /// A backend dropped without [`Backend::shutdown`] stops its webhook tasks (the bus's
    /// observer outlives it, and queues nothing more).
    fn drop(&mut self) {
        if let Some(w) = &self.webhooks {
            w.stop();
        }
    }
}
