//! The proxies (`[proxy]`, PROTOCOL.md §10): Herald asks the application's backend whether a
//! connection may connect, subscribe or publish, and forwards `rpc` calls to it.
//!
//! Every call is one JSON POST bounded by `proxy.timeout`. A call that gives no usable answer
//! (timeout, refused, non-2xx, bad JSON) refuses the operation with `unavailable`: the
//! backend being down never lets anything through, and never hangs a client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{CallError, Client, Endpoint};
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::topic::Pattern;

/// Request headers of the WebSocket upgrade passed to the connect proxy (lower case). Not
/// `authorization` (the token, verified, is sent as claims) nor hop-by-hop headers.
pub const FORWARDED_HEADERS: &[&str] = &[
    "cookie",
    "origin",
    "user-agent",
    "accept-language",
    "referer",
    "x-forwarded-for",
    "x-real-ip",
    "x-request-id",
];

/// The backend said no: the code and message the client is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    pub code: ErrorCode,
    pub message: String,
}

impl Denied {
    /// A backend's code: one of the protocol's error codes, else `forbidden`.
    fn from_answer(code: Option<&str>, message: Option<String>) -> Denied {
        let code = code
            .and_then(|c| serde_json::from_value(serde_json::Value::String(c.into())).ok())
            .unwrap_or(ErrorCode::Forbidden);
        Denied {
            code,
            message: message.unwrap_or_else(|| "refused by the application".into()),
        }
    }
}

/// Why a proxied operation failed: a refusal, or no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{}", .0.message)]
    Denied(Denied),
    #[error("the application's backend is unavailable ({0})")]
    Unavailable(#[from] CallError),
}

impl ProxyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProxyError::Denied(d) => d.code,
            ProxyError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// `connect`: who is connecting.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    pub session: &'a str,
    pub ip: String,
    pub headers: &'a BTreeMap<String, String>,
    /// The verified token's claims, or `null`.
    pub token: Option<serde_json::Value>,
    /// The `hello`'s `client` field.
    pub client: Option<&'a RawValue>,
}

/// What the connect proxy grants.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct ConnectGrant {
    pub user: Option<String>,
    pub info: Option<serde_json::Value>,
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    /// Unix seconds: the connection closes with 4001 then.
    pub expires_at: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct SubscribeRequest<'a> {
    pub session: &'a str,
    pub user: Option<&'a str>,
    pub pattern: &'a str,
    pub group: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct PublishRequest<'a> {
    /// `null` for an HTTP publish.
    pub session: Option<&'a str>,
    pub user: Option<&'a str>,
    pub topic: &'a str,
    pub data: &'a RawValue,
    pub msg_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct RpcRequest<'a> {
    pub session: &'a str,
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub data: &'a RawValue,
}

/// The answer of connect, subscribe and publish: `{"allow":true,…}` or
/// `{"allow":false,"code","message"}`.
#[derive(Deserialize)]
struct Verdict {
    allow: bool,
    code: Option<String>,
    message: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RpcAnswer {
    data: Option<Box<RawValue>>,
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: Option<String>,
    message: Option<String>,
}

/// One route: the pattern it covers and where to ask.
#[derive(Debug)]
struct Route {
    pattern: Pattern,
    endpoint: Endpoint,
    skip_api_keys: bool,
}

/// The compiled `[proxy]`.
pub struct Proxy {
    client: Client,
    timeout: Duration,
    connect: Option<Endpoint>,
    rpc: Option<Endpoint>,
    subscribe: Vec<Route>,
    publish: Vec<Route>,
    metrics: Arc<Metrics>,
}

/// A route a `sub` or publish must ask, chosen once for the operation.
#[derive(Clone, Copy)]
pub struct RouteRef<'a>(&'a Endpoint);

impl Proxy {
    /// Compiles `[proxy]`; the error names the key (the config was validated, so this only
    /// fails for configurations built in code).
    pub fn new(c: &ProxyConfig, client: Client, metrics: Arc<Metrics>) -> Result<Proxy, String> {
        let endpoint =
            |key: &str, url: &str| Endpoint::parse(url).map_err(|e| format!("`proxy.{key}`: {e}"));
        let routes = |kind: &str, list: &[crate::config::ProxyRoute]| {
            list.iter()
                .enumerate()
                .map(|(i, r)| {
                    Ok(Route {
                        pattern: Pattern::parse(&r.pattern)
                            .map_err(|e| format!("`proxy.{kind}[{i}].pattern`: {e}"))?,
                        endpoint: endpoint(&format!("{kind}[{i}].url"), &r.url)?,
                        skip_api_keys: r.skip_api_keys,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Proxy {
            client,
            timeout: c.timeout,
            connect: c
                .connect
                .as_deref()
                .map(|u| endpoint("connect", u))
                .transpose()?,
            rpc: c.rpc.as_deref().map(|u| endpoint("rpc", u)).transpose()?,
            subscribe: routes("subscribe", &c.subscribe)?,
            publish: routes("publish", &c.publish)?,
            metrics,
        })
    }

    pub fn asks_connect(&self) -> bool {
        self.connect.is_some()
    }

    /// The subscribe route for `pattern`: the first whose pattern can match one of its
    /// topics (a `sub` to `**` is asked about `chat/**` too).
    pub fn subscribe_route(&self, pattern: &Pattern) -> Option<RouteRef<'_>> {
        self.subscribe
            .iter()
            .find(|r| r.pattern.may_overlap(pattern))
            .map(|r| RouteRef(&r.endpoint))
    }

    /// The publish route for `topic`; `api_key`: an HTTP publish made with an API key, which
    /// routes marked `skip_api_keys` let through unasked.
    pub fn publish_route(&self, topic: &str, api_key: bool) -> Option<RouteRef<'_>> {
        let r = self.publish.iter().find(|r| r.pattern.matches(topic))?;
        (!(api_key && r.skip_api_keys)).then_some(RouteRef(&r.endpoint))
    }

    /// POSTs `body` to `to` and parses the answer as `T`; a failure is counted and logged
    /// here, a verdict by the caller (with the returned time taken).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        to: &Endpoint,
        body: &impl Serialize,
    ) -> Result<(T, Duration), CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::BadJson(e.to_string()))?;
        let (answer, took) = self.client.post(to, &body, &[], self.timeout).await;
        let parsed = answer.and_then(|bytes| {
            serde_json::from_slice::<T>(&bytes).map_err(|e| CallError::BadJson(e.to_string()))
        });
        match parsed {
            Ok(v) => Ok((v, took)),
            Err(e) => {
                self.metrics.backend.proxy_call(kind, e.outcome(), took);
                tracing::warn!(kind, url = %to.url(), error = %e, "proxy call failed");
                Err(e)
            }
        }
    }

    fn verdict(&self, kind: &'static str, v: &Verdict, took: Duration) -> Result<(), ProxyError> {
        let outcome = if v.allow { "allowed" } else { "denied" };
        self.metrics.backend.proxy_call(kind, outcome, took);
        if v.allow {
            return Ok(());
        }
        Err(ProxyError::Denied(Denied::from_answer(
            v.code.as_deref(),
            v.message.clone(),
        )))
    }

    /// Asks the connect proxy (it must be configured: see [`Proxy::asks_connect`]).
    pub async fn connect(&self, req: &ConnectRequest<'_>) -> Result<ConnectGrant, ProxyError> {
        let Some(to) = &self.connect else {
            return Ok(ConnectGrant::default());
        };
        let (v, took) = self.call::<Verdict>("connect", to, req).await?;
        self.verdict("connect", &v, took)?;
        let grant = serde_json::from_value(serde_json::Value::Object(v.rest))
            .map_err(|e| CallError::BadJson(format!("connect answer: {e}")))?;
        Ok(grant)
    }

    pub async fn subscribe(
        &self,
        route: RouteRef<'_>,
        req: &SubscribeRequest<'_>,
    ) -> Result<(), ProxyError> {
        let (v, took) = self.call::<Verdict>("subscribe", route.0, req).await?;
        self.verdict("subscribe", &v, took)
    }

    /// Asks the publish proxy; `Some(data)` when the backend replaced the payload.
    pub async fn publish(
        &self,
        route: RouteRef<'_>,
        req: &PublishRequest<'_>,
    ) -> Result<Option<Box<RawValue>>, ProxyError> {
        let (v, took) = self.call::<Verdict>("publish", route.0, req).await?;
        self.verdict("publish", &v, took)?;
        match v.rest.get("data") {
            None => Ok(None),
            Some(d) => {
                Ok(Some(serde_json::value::to_raw_value(d).map_err(|e| {
                    CallError::BadJson(format!("publish answer: {e}"))
                })?))
            }
        }
    }

    /// Forwards an `rpc`; the backend's `data`, or its error.
    pub async fn rpc(&self, req: &RpcRequest<'_>) -> Result<Box<RawValue>, ProxyError> {
        let Some(to) = &self.rpc else {
            return Err(ProxyError::Denied(Denied {
                code: ErrorCode::NotFound,
                message: "this server has no rpc backend ([proxy] rpc)".into(),
            }));
        };
        let (a, took) = self.call::<RpcAnswer>("rpc", to, req).await?;
        if let Some(e) = a.error {
            self.metrics.backend.proxy_call("rpc", "denied", took);
            let mut d = Denied::from_answer(e.code.as_deref(), e.message);
            if e.code.is_none() {
                d.code = ErrorCode::Internal;
            }
            return Err(ProxyError::Denied(d));
        }
        self.metrics.backend.proxy_call("rpc", "allowed", took);
        match a.data {
            Some(d) => Ok(d),
            None => Ok(RawValue::from_string("null".into()).expect("null is JSON")),
        }
    }
}
