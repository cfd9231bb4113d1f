//! Per-key request rate (a token bucket) and daily quota, the defence against scraping a model through its API.
//! Counted in this process: with several replicas each enforces its own share (documented in docs/security.md).

use std::collections::HashMap;
use std::time::Instant;

use ferry_auth::Access;
use ferry_types::ErrorKind;
use parking_lot::Mutex;

use crate::ApiError;

/// Server-wide defaults for keys that set no limits of their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultLimits {
    /// Requests per second per key (the bucket holds as many, so short bursts up to one second's worth pass).
    pub rate_per_second: Option<u32>,
    /// Requests per key per UTC day.
    pub daily_quota: Option<u64>,
}

#[derive(Debug)]
struct Usage {
    tokens: f64,
    refilled: Instant,
    day: u64,
    today: u64,
}

/// Usage per key.
#[derive(Debug, Default)]
pub struct UsageLimiter {
    usage: Mutex<HashMap<String, Usage>>,
}

fn utc_day_and_seconds_left() -> (u64, u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (now / 86_400, 86_400 - now % 86_400)
}

impl UsageLimiter {
    /// Counts one request of `access`; refuses it with 429 and a `Retry-After` when over the rate or the quota.
    ///
    /// # Errors
    /// [`ErrorKind::RateLimited`].
    pub fn admit(&self, access: &Access, defaults: DefaultLimits) -> Result<(), ApiError> {
        let rate = access.rate_per_second.or(defaults.rate_per_second);
        let quota = access.daily_quota.or(defaults.daily_quota);
        if rate.is_none() && quota.is_none() {
            return Ok(());
        }
        let (day, left_today) = utc_day_and_seconds_left();
        let now = Instant::now();
        let mut all = self.usage.lock();
        let usage = all.entry(access.actor.clone()).or_insert_with(|| Usage {
            tokens: rate.map_or(0.0, f64::from),
            refilled: now,
            day,
            today: 0,
        });
        if usage.day != day {
            usage.day = day;
            usage.today = 0;
        }
        if let Some(q) = quota
            && usage.today >= q
        {
            return Err(ApiError::new(
                ErrorKind::RateLimited,
                format!("key {} used its daily quota of {q} requests; it resets at 00:00 UTC", access.actor),
            )
            .with_retry_after(left_today));
        }
        if let Some(r) = rate {
            let r = f64::from(r.max(1));
            usage.tokens = (usage.tokens + now.duration_since(usage.refilled).as_secs_f64() * r).min(r);
            usage.refilled = now;
            if usage.tokens < 1.0 {
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a few seconds at most")]
                let wait = ((1.0 - usage.tokens) / r).ceil().max(1.0) as u64;
                return Err(ApiError::new(
                    ErrorKind::RateLimited,
                    format!("key {} is over its rate limit of {r} requests per second", access.actor),
                )
                .with_retry_after(wait));
            }
            usage.tokens -= 1.0;
        }
        usage.today += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rate: Option<u32>, quota: Option<u64>) -> Access {
        let mut a = Access::unrestricted("k");
        a.rate_per_second = rate;
        a.daily_quota = quota;
        a
    }

    #[test]
    fn a_burst_over_the_rate_is_refused_with_retry_after() {
        let limiter = UsageLimiter::default();
        let k = key(Some(5), None);
        let admitted = (0..20).filter(|_| limiter.admit(&k, DefaultLimits::default()).is_ok()).count();
        // The bucket starts full (5) and refills at 5/s: within this loop's microseconds, about 5 pass.
        assert!((5..=6).contains(&admitted), "{admitted}");
        let err = limiter.admit(&k, DefaultLimits::default()).expect_err("over");
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(err.retry_after().is_some_and(|s| s >= 1));
    }

    #[test]
    fn the_daily_quota_stops_a_key_until_midnight_and_others_are_unaffected() {
        let limiter = UsageLimiter::default();
        let k = key(None, Some(3));
        for _ in 0..3 {
            limiter.admit(&k, DefaultLimits::default()).expect("within quota");
        }
        let err = limiter.admit(&k, DefaultLimits::default()).expect_err("quota");
        assert!(err.message().contains("daily quota of 3"), "{}", err.message());
        let other = Access::unrestricted("other");
        limiter.admit(&other, DefaultLimits { daily_quota: Some(1), rate_per_second: None }).expect("own budget");
        assert!(limiter.admit(&other, DefaultLimits { daily_quota: Some(1), rate_per_second: None }).is_err());
    }
}
