//! Per-user send quotas: token buckets for messages and bytes per second, with
//! one second of burst, kept by the node where a send is decided (its group's
//! leader). A user sending to several broker groups gets its quota in each.
//!
//! A refused request takes nothing from either bucket and stores nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::identity::Identity;
use super::users::MAX_USERS;
use crate::error::BrokerError;

/// Send quotas of the users this node has seen sending.
#[derive(Default)]
pub struct SendQuotas {
    buckets: Mutex<HashMap<String, UserBuckets>>,
}

#[derive(Default)]
struct UserBuckets {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
}

struct Bucket {
    rate_per_s: u64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate_per_s: u64, now: Instant) -> Self {
        Self {
            rate_per_s,
            tokens: rate_per_s as f64,
            updated: now,
        }
    }

    /// Brings the bucket to `now` at (a possibly changed) `rate_per_s`.
    fn refill(&mut self, rate_per_s: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.rate_per_s = rate_per_s;
        self.tokens = (self.tokens + elapsed * rate_per_s as f64).min(rate_per_s as f64);
        self.updated = now;
    }

    /// Seconds until `n` tokens are there (0 if they are).
    fn wait_secs(&self, n: u64) -> f64 {
        ((n as f64 - self.tokens) / self.rate_per_s as f64).max(0.0)
    }
}

impl SendQuotas {
    /// Takes `messages` and `bytes` from the caller's buckets, or refuses.
    ///
    /// # Errors
    /// [`BrokerError::RateLimited`] with the seconds until the request would pass;
    /// [`BrokerError::LimitReached`] for a request larger than one second of the
    /// quota (it never could pass).
    pub fn take(&self, caller: &Identity, messages: u64, bytes: u64) -> Result<(), BrokerError> {
        let quotas = caller.quotas;
        if quotas.send_messages_per_s.is_none() && quotas.send_bytes_per_s.is_none() {
            return Ok(());
        }
        for (rate, n, what) in [
            (quotas.send_messages_per_s, messages, "messages"),
            (quotas.send_bytes_per_s, bytes, "bytes"),
        ] {
            if let Some(rate) = rate {
                if n > rate {
                    return Err(BrokerError::LimitReached(format!(
                        "this request sends {n} {what}, more than user `{}`'s quota allows in a second ({rate} {what}/s): send smaller batches",
                        caller.name
                    )));
                }
            }
        }
        let now = Instant::now();
        let mut all = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !all.contains_key(&caller.name) && all.len() >= MAX_USERS {
            // Users deleted since they last sent: forget the fullest buckets.
            all.clear();
        }
        let user = all.entry(caller.name.clone()).or_default();
        let mut wait: f64 = 0.0;
        for (slot, rate, n) in [
            (&mut user.messages, quotas.send_messages_per_s, messages),
            (&mut user.bytes, quotas.send_bytes_per_s, bytes),
        ] {
            match rate {
                None => *slot = None,
                Some(rate) => {
                    let bucket = slot.get_or_insert_with(|| Bucket::new(rate, now));
                    bucket.refill(rate, now);
                    wait = wait.max(bucket.wait_secs(n));
                }
            }
        }
        if wait > 0.0 {
            return Err(BrokerError::RateLimited {
                reason: format!(
                    "user `{}` is over its send quota; retry in {wait:.2} s",
                    caller.name
                ),
                retry_after_secs: wait.ceil().max(1.0) as u64,
            });
        }
        for (slot, n) in [(&mut user.messages, messages), (&mut user.bytes, bytes)] {
            if let Some(bucket) = slot {
                bucket.tokens -= n as f64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::IdentityKind;
    use crate::auth::users::Quotas;

    fn caller(name: &str, messages: Option<u64>, bytes: Option<u64>) -> Identity {
        Identity {
            name: name.into(),
            kind: IdentityKind::User,
            permissions: Vec::new(),
            quotas: Quotas {
                send_messages_per_s: messages,
                send_bytes_per_s: bytes,
            },
        }
    }

    #[test]
    fn a_burst_of_one_second_then_refusals_that_take_nothing() {
        let quotas = SendQuotas::default();
        let user = caller("five", Some(5), None);
        for _ in 0..5 {
            quotas.take(&user, 1, 100).expect("within the burst");
        }
        let refused = quotas.take(&user, 1, 100).expect_err("over");
        assert!(
            matches!(
                refused,
                BrokerError::RateLimited {
                    retry_after_secs: 1,
                    ..
                }
            ),
            "{refused:?}"
        );
        let too_big = quotas.take(&user, 6, 1).expect_err("never fits");
        assert!(
            matches!(too_big, BrokerError::LimitReached(_)),
            "{too_big:?}"
        );
        // Bytes: a refusal on one bucket takes nothing from the other.
        let both = caller("both", Some(100), Some(1000));
        quotas.take(&both, 1, 1000).expect("fits");
        assert!(quotas.take(&both, 1, 10).is_err());
        let unlimited = caller("unlimited", None, None);
        for _ in 0..1000 {
            quotas.take(&unlimited, 1000, 1 << 30).expect("no quota");
        }
    }
}
