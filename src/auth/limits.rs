//! Per-client limits that do not depend on identity: connections per IP address and the
//! publish rate of one connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

/// Open connections per client address, bounded by `limits.max_connections_per_ip` (passed
/// at each acquire, so that a configuration reload applies to the next connection).
#[derive(Debug, Default)]
pub struct PerIp {
    open: DashMap<IpAddr, usize>,
}

/// One counted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new() -> Arc<PerIp> {
        Arc::new(PerIp::default())
    }

    /// Takes a slot for `ip`, or `None` when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut n = self.open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).map_or(0, |n| *n)
    }

    /// Addresses with at least one connection (the map never keeps zeros).
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.owner.open.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// A token bucket: `rate` publishes per second on average, bursts of twice that
/// (PROTOCOL.md §9 `publish_rate`).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `None` for a rate of 0 (unlimited).
    pub fn new(rate: u32) -> Option<TokenBucket> {
        if rate == 0 {
            return None;
        }
        let burst = 2.0 * f64::from(rate);
        Some(TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The size of a burst.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn per_ip_slots_come_back() {
        let p = PerIp::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = p.acquire(ip, 2).unwrap();
        let b = p.acquire(ip, 2).unwrap();
        assert!(p.acquire(ip, 2).is_none());
        assert!(p.acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(p.count(ip), 1);
        let _c = p.acquire(ip, 2).unwrap();
        drop(b);
        drop(_c);
        assert_eq!(p.count(ip), 0);
        assert_eq!(p.addresses(), 0);
    }

    #[test]
    fn bucket_allows_bursts_of_twice_the_rate_then_the_rate() {
        assert!(TokenBucket::new(0).is_none());
        let mut b = TokenBucket::new(10).unwrap();
        let t0 = b.last;
        let taken = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(taken, 20);
        // Half a second later: five more.
        let t1 = t0 + Duration::from_millis(500);
        let taken = (0..100).filter(|_| b.take(t1)).count();
        assert_eq!(taken, 5);
    }
}
