//! What a connect proxy's answer makes of a connection's access. Without a token the backend
//! decides alone: its `user`, `info` and lists are the connection's (an absent list keeps the
//! anonymous one). With a token the backend can only narrow it: `user` stays the token's
//! `sub`, each list keeps only the patterns the token's permissions contain, and the earlier
//! of the two expiries applies.

use super::proxy::ConnectGrant;
use crate::auth::Access;

impl ConnectGrant {
    /// The access the connection gets; `has_token`: `current` came from a verified token.
    /// The error names a list whose pattern does not parse.
    pub fn apply(self, current: &Access, has_token: bool) -> Result<Access, String> {
        let bad = |which: &str, e: String| format!("connect answer '{which}': {e}");
        let list = |answer: Option<Vec<String>>, now: &crate::auth::Perms, which: &str| match answer
        {
            None => Ok(now.clone()),
            Some(l) if has_token => now.narrowed(&l).map_err(|e| bad(which, e)),
            Some(l) => crate::auth::Perms::parse(&l).map_err(|e| bad(which, e)),
        };
        let expires_at = match (current.expires_at, self.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Access {
            user: if has_token {
                current.user.clone()
            } else {
                self.user.or_else(|| current.user.clone())
            },
            info: self.info.unwrap_or_else(|| current.info.clone()),
            publish: list(self.publish, &current.publish, "publish")?,
            subscribe: list(self.subscribe, &current.subscribe, "subscribe")?,
            expires_at,
            issued_at: current.issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Perms;

    fn token_access() -> Access {
        Access {
            user: Some("ann".into()),
            info: serde_json::json!({"n": 1}),
            publish: Perms::parse(&["chat/**"]).unwrap(),
            subscribe: Perms::parse(&["chat/**", "news/*"]).unwrap(),
            expires_at: Some(2_000),
            issued_at: Some(1_000),
        }
    }

    #[test]
    fn a_token_is_only_narrowed() {
        let g = ConnectGrant {
            user: Some("mallory".into()),
            info: None,
            publish: Some(vec!["chat/room1".into(), "admin/**".into()]),
            subscribe: None,
            expires_at: Some(1_500),
        };
        let a = g.apply(&token_access(), true).unwrap();
        assert_eq!(a.user.as_deref(), Some("ann"));
        assert!(a.publish.allows_topic("chat/room1"));
        assert!(!a.publish.allows_topic("chat/room2"));
        assert!(
            !a.publish.allows_topic("admin/x"),
            "never wider than the token"
        );
        assert!(
            a.subscribe.allows_topic("news/x"),
            "absent list: the token's"
        );
        assert_eq!(a.expires_at, Some(1_500));
        assert_eq!(a.info, serde_json::json!({"n": 1}));
    }

    #[test]
    fn without_a_token_the_backend_decides() {
        let anonymous = Access {
            user: None,
            info: serde_json::Value::Null,
            publish: Perms::none(),
            subscribe: Perms::parse(&["public/**"]).unwrap(),
            expires_at: None,
            issued_at: None,
        };
        let g = ConnectGrant {
            user: Some("bob".into()),
            info: Some(serde_json::json!({"name": "Bob"})),
            publish: Some(vec!["chat/**".into()]),
            subscribe: None,
            expires_at: None,
        };
        let a = g.apply(&anonymous, false).unwrap();
        assert_eq!(a.user.as_deref(), Some("bob"));
        assert!(a.publish.allows_topic("chat/x"));
        assert!(a.subscribe.allows_topic("public/x") && !a.subscribe.allows_topic("chat/x"));
        let bad = ConnectGrant {
            publish: Some(vec!["a//b".into()]),
            ..ConnectGrant::default()
        };
        assert!(
            bad.apply(&anonymous, false)
                .unwrap_err()
                .contains("publish")
        );
    }
}
