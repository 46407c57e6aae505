//! What the connect proxy is told about a WebSocket's upgrade request (PROTOCOL.md §10): the
//! peer's address and the allow-listed headers, taken from the request before it is upgraded
//! and kept by the reader only until `hello`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::backend::FORWARDED_HEADERS;

/// What the connect proxy is told about the upgrade request, kept only until `hello`.
#[derive(Debug)]
pub(super) struct Upgrade {
    pub ip: IpAddr,
    pub headers: BTreeMap<String, String>,
}

impl Upgrade {
    /// The allow-listed headers of the upgrade request (several values of one header joined
    /// with ", ", as HTTP allows).
    pub(super) fn new(ip: IpAddr, headers: &HeaderMap) -> Upgrade {
        let mut kept = BTreeMap::new();
        for name in FORWARDED_HEADERS {
            let values: Vec<&str> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !values.is_empty() {
                kept.insert((*name).to_owned(), values.join(", "));
            }
        }
        Upgrade { ip, headers: kept }
    }
}
