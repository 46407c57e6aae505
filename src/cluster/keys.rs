//! Redis key and channel names.
//!
//! Every key of one topic carries the topic as a hash tag (`herald:{<topic>}:…`), so all of
//! them live in one slot of a Redis Cluster and the publish script may touch them together.
//! Messages travel on one channel per topic (`herald:m:<topic>`); a node subscribes to the
//! channels its local sessions need (see [`channel_pattern`]).

/// Prefix of message channels.
pub const MSG_PREFIX: &str = "herald:m:";
/// Prefix of a node's reply channel (`herald:r:<node>`), for `$inbox/…` replies.
pub const REPLY_PREFIX: &str = "herald:r:";
/// The channel every node listens to for control commands (`POST /v1/disconnect`, …).
pub const CONTROL: &str = "herald:ctl";
/// The channel of holds: a node that lags asks every node to hold its publishes
/// (`slowdown.rs`).
pub const SLOW: &str = "herald:slow";
/// Prefix of a node's channel for answers to its control commands (`herald:cr:<node>`).
pub const CONTROL_REPLY_PREFIX: &str = "herald:cr:";
/// Sorted set of revoked users, scored by their `before` (Unix seconds).
pub const REVOKED: &str = "herald:revoked";
/// Set of every topic published to (for wildcard `rewind` and retained lookups).
pub const TOPICS: &str = "herald:topics";
/// Set of topics holding a retained message.
pub const RETAINED: &str = "herald:retained";
/// Set of topics with presence members (walked by the presence reaper).
pub const PRESENCE_TOPICS: &str = "herald:presence";
/// Sorted set of occupied subscription patterns, scored by the latest expiry a node gave
/// its entry (walked by the occupancy reaper: only patterns whose every node is gone).
pub const OCCUPIED: &str = "herald:occupied";

/// The sorted set of the nodes subscribed to `pattern` (see `occupancy.rs`). Its own
/// prefix: a pattern is not a topic, and must not share a topic's keys.
pub fn occupancy(pattern: &str) -> String {
    format!("herald:occ:{{{pattern}}}")
}

/// The keys of one topic.
#[derive(Debug, Clone)]
pub struct TopicKeys {
    pub offset: String,
    pub epoch: String,
    pub history: String,
    pub retained: String,
    pub presence: String,
    pub presence_info: String,
    tag: String,
}

impl TopicKeys {
    pub fn new(topic: &str) -> TopicKeys {
        let tag = format!("herald:{{{topic}}}:");
        TopicKeys {
            offset: format!("{tag}off"),
            epoch: format!("{tag}ep"),
            history: format!("{tag}hist"),
            retained: format!("{tag}ret"),
            presence: format!("{tag}pres"),
            presence_info: format!("{tag}presinfo"),
            tag,
        }
    }

    /// The de-duplication key of `msg_id`.
    pub fn dedup(&self, msg_id: &str) -> String {
        format!("{}dd:{msg_id}", self.tag)
    }

    /// The key a group's delivery of the feed's batch of offsets `first..=last` is claimed
    /// under (every node receives the same batch; one wins it).
    pub fn claim_batch(
        &self,
        pattern: &str,
        group: &str,
        first: u64,
        last: u64,
        epoch: &str,
    ) -> String {
        let tag = &self.tag;
        let n = group.len();
        format!("{tag}gb:{epoch}:{first}-{last}:{n}:{pattern}|{group}")
    }

    /// The key a group's delivery of `offset` is claimed under (one node wins it).
    pub fn claim(&self, pattern: &str, group: &str, offset: u64, epoch: &str) -> String {
        format!("{}g:{epoch}:{offset}:{}:{pattern}", self.tag, group.len()) + "|" + group
    }
}

/// The channel messages of `topic` travel on.
pub fn channel(topic: &str) -> String {
    format!("{MSG_PREFIX}{topic}")
}

/// The topic of a message channel.
pub fn topic_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(MSG_PREFIX)
}

/// The channel a node's inbox replies arrive on.
pub fn reply_channel(node: &str) -> String {
    format!("{REPLY_PREFIX}{node}")
}

/// The channel of answers to `node`'s control commands.
pub fn control_reply_channel(node: &str) -> String {
    format!("{CONTROL_REPLY_PREFIX}{node}")
}

/// What a node subscribes to in Redis for a Herald pattern: `(channel, is_pattern)`.
///
/// Exact topics get their channel. A wildcard pattern becomes a Redis glob that matches at
/// least every channel the pattern needs: literal segments stay (with Redis's escape `\`
/// escaped), any wildcard segment becomes `*`, and from the first `**` on the rest becomes
/// `*` (Redis's `*` also spans `/`, so `orders/**` → `orders*` covers `orders` itself).
/// The superset is filtered by the node's own router, so the glob only has to be wide
/// enough, never exact.
pub fn channel_pattern(pattern: &str, exact: bool) -> (String, bool) {
    if exact {
        return (channel(pattern), false);
    }
    let mut out = String::from(MSG_PREFIX);
    for (i, seg) in pattern.split('/').enumerate() {
        if seg == "**" {
            // No '/' before it: `orders/**` also matches `orders`.
            out.push('*');
            return (out, true);
        }
        if i > 0 {
            out.push('/');
        }
        if seg.contains(['*', '?', '[', '{']) {
            out.push('*');
        } else {
            for c in seg.chars() {
                if c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_wide_enough_globs() {
        assert_eq!(channel_pattern("a/b", true), ("herald:m:a/b".into(), false));
        assert_eq!(channel_pattern("a/*/c", false).0, "herald:m:a/*/c");
        assert_eq!(channel_pattern("orders/**", false).0, "herald:m:orders*");
        assert_eq!(channel_pattern("**", false).0, "herald:m:*");
        assert_eq!(channel_pattern("a/**/z", false).0, "herald:m:a*");
        assert_eq!(channel_pattern("chat/{x,y}", false).0, "herald:m:chat/*");
        assert_eq!(channel_pattern("w\\x/s?", false).0, "herald:m:w\\\\x/*");
    }

    #[test]
    fn keys_share_a_hash_tag() {
        let k = TopicKeys::new("chat/room");
        for key in [&k.offset, &k.epoch, &k.history, &k.retained, &k.dedup("x")] {
            assert!(key.starts_with("herald:{chat/room}:"), "{key}");
        }
    }
}
