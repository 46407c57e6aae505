//! Who a session belongs to: what presence shows about its user.

use std::sync::{Arc, LazyLock};

/// The user behind a session and what presence shows about them (PROTOCOL.md §7: the
/// token's `sub` and `info` claims). Anonymous sessions have neither.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub user: Option<String>,
    pub info: serde_json::Value,
    /// The token's `iat`: a revocation (`POST /v1/revoke`) closes the connections whose
    /// token was issued before its `before`.
    pub issued_at: Option<u64>,
}

/// The one identity of every anonymous session, shared: idle anonymous connections are
/// the many, and each would otherwise hold a copy of nothing.
pub(super) fn anonymous() -> Arc<Identity> {
    static ANONYMOUS: LazyLock<Arc<Identity>> = LazyLock::new(|| Arc::new(Identity::default()));
    ANONYMOUS.clone()
}
