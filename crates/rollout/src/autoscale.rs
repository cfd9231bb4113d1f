//! How many instances a model version should run: a step at a time between `min` and `max`, up on queue pressure,
//! down after the load has stayed low for a whole cooldown (Kubernetes' HPA calls this the stabilisation window),
//! and to zero after an idle period when `min` is 0.
//!
//! One step per decision keeps the policy predictable on small machines, where an instance costs a core: a second
//! instance that does not help shows up as pressure that does not go away, not as a jump to `max`.

use std::time::Duration;

/// A model version's scaling settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePolicy {
    /// Fewest instances; 0 lets the version scale to zero after `idle_timeout` without requests.
    pub min: usize,
    /// Most instances.
    pub max: usize,
    /// Queued requests per instance that count as pressure.
    pub queue_depth: usize,
    /// Mean queue wait over the last observation that counts as pressure.
    pub queue_wait: Duration,
    /// Least time between a change and a scale-up.
    pub up_cooldown: Duration,
    /// How long the load must stay low (and the last change be past) before a scale-down.
    pub down_cooldown: Duration,
    /// With `min` 0: time without requests after which every instance stops.
    pub idle_timeout: Duration,
}

impl ScalePolicy {
    /// Whether the instance count can change at all.
    #[must_use]
    pub fn scales(&self) -> bool {
        self.min != self.max
    }
}

/// What the server saw of one version since its previous observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// When (any monotonic clock, as a duration since its origin).
    pub at: Duration,
    /// Instances running or starting.
    pub instances: usize,
    /// Requests waiting for an instance now.
    pub queue_depth: usize,
    /// Mean time the requests started since the previous observation waited, if any started.
    pub mean_wait: Option<Duration>,
    /// Requests in flight (queued or running).
    pub in_flight: usize,
    /// Time since the last request arrived.
    pub idle_for: Duration,
}

/// The memory of one version's scaler: when it last changed and since when the load has been low.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    last_change: Option<Duration>,
    low_since: Option<Duration>,
}

impl Autoscaler {
    /// A scaler that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the instance count changed at `at` (a cold start, an eviction, or this scaler's own decision).
    pub fn changed(&mut self, at: Duration) {
        self.last_change = Some(at);
        self.low_since = None;
    }

    /// The instance count to move to, or `None` to stay.
    pub fn decide(&mut self, policy: &ScalePolicy, seen: &Observation) -> Option<usize> {
        let n = seen.instances;
        let since_change = self.last_change.map_or(Duration::MAX, |t| seen.at.saturating_sub(t));
        let pressure = seen.queue_depth >= policy.queue_depth.max(1).saturating_mul(n.max(1))
            || seen.mean_wait.is_some_and(|w| w >= policy.queue_wait);
        let low = seen.queue_depth == 0 && seen.mean_wait.is_none_or(|w| w < policy.queue_wait / 2);
        self.low_since = if low { self.low_since.or(Some(seen.at)) } else { None };
        let low_for = self.low_since.map_or(Duration::ZERO, |t| seen.at.saturating_sub(t));
        let target = if n < policy.min {
            policy.min
        } else if n > policy.max {
            policy.max
        } else if n == 0 {
            // Zero instances start again on the next request, not here.
            return None;
        } else if pressure && n < policy.max && since_change >= policy.up_cooldown {
            n + 1
        } else if policy.min == 0 && seen.in_flight == 0 && seen.idle_for >= policy.idle_timeout {
            0
        } else if low
            && n > policy.min.max(1)
            && low_for >= policy.down_cooldown
            && since_change >= policy.down_cooldown
        {
            n - 1
        } else {
            return None;
        };
        (target != n).then(|| {
            self.last_change = Some(seen.at);
            // The low window of the next step down starts at this one.
            self.low_since = (target < n).then_some(seen.at);
            target
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: usize, max: usize) -> ScalePolicy {
        ScalePolicy {
            min,
            max,
            queue_depth: 4,
            queue_wait: Duration::from_millis(5),
            up_cooldown: Duration::from_secs(2),
            down_cooldown: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn seen(at_s: u64, instances: usize, queue_depth: usize, wait_ms: Option<u64>) -> Observation {
        Observation {
            at: Duration::from_secs(at_s),
            instances,
            queue_depth,
            mean_wait: wait_ms.map(Duration::from_millis),
            in_flight: queue_depth,
            idle_for: Duration::ZERO,
        }
    }

    #[test]
    fn pressure_adds_one_instance_per_up_cooldown_up_to_max() {
        let (p, mut s) = (policy(1, 3), Autoscaler::new());
        assert_eq!(s.decide(&p, &seen(0, 1, 4, None)), Some(2), "4 queued on 1 instance is pressure");
        assert_eq!(s.decide(&p, &seen(1, 2, 20, Some(30))), None, "inside the up cooldown");
        assert_eq!(s.decide(&p, &seen(2, 2, 0, Some(6))), Some(3), "a mean wait over the target is pressure too");
        assert_eq!(s.decide(&p, &seen(10, 3, 50, Some(50))), None, "never above max");
    }

    #[test]
    fn light_load_is_not_pressure() {
        let (p, mut s) = (policy(1, 3), Autoscaler::new());
        assert_eq!(s.decide(&p, &seen(0, 1, 3, Some(4))), None);
        assert_eq!(s.decide(&p, &seen(5, 2, 7, Some(1))), None, "7 queued on 2 instances is under 4 each");
    }

    #[test]
    fn scale_down_waits_for_a_whole_cooldown_of_low_load() {
        let (p, mut s) = (policy(1, 3), Autoscaler::new());
        s.changed(Duration::ZERO);
        assert_eq!(s.decide(&p, &seen(1, 3, 0, None)), None);
        assert_eq!(s.decide(&p, &seen(9, 3, 0, Some(1))), None, "low for 8 s of 10");
        // A burst resets the window.
        assert_eq!(s.decide(&p, &seen(10, 3, 2, Some(3))), None);
        assert_eq!(s.decide(&p, &seen(11, 3, 0, None)), None);
        assert_eq!(s.decide(&p, &seen(20, 3, 0, None)), None, "low for 9 s since the burst");
        assert_eq!(s.decide(&p, &seen(21, 3, 0, None)), Some(2));
        assert_eq!(s.decide(&p, &seen(25, 2, 0, None)), None, "one step per cooldown");
        assert_eq!(s.decide(&p, &seen(31, 2, 0, None)), Some(1));
        assert_eq!(s.decide(&p, &seen(100, 1, 0, None)), None, "never below min");
    }

    #[test]
    fn min_zero_scales_to_zero_only_when_idle_and_nothing_is_in_flight() {
        let (p, mut s) = (policy(0, 2), Autoscaler::new());
        let mut o = seen(100, 1, 0, None);
        o.idle_for = Duration::from_secs(59);
        assert_eq!(s.decide(&p, &o), None);
        o.idle_for = Duration::from_secs(60);
        o.in_flight = 1;
        assert_eq!(s.decide(&p, &o), None, "a request still running keeps the instance");
        o.in_flight = 0;
        assert_eq!(s.decide(&p, &o), Some(0));
        o.instances = 0;
        assert_eq!(s.decide(&p, &o), None, "the next request starts one, not the scaler");
    }

    #[test]
    fn below_min_or_above_max_is_corrected_at_once() {
        let mut s = Autoscaler::new();
        assert_eq!(s.decide(&policy(2, 3), &seen(0, 1, 0, None)), Some(2));
        assert_eq!(s.decide(&policy(1, 2), &seen(0, 3, 0, None)), Some(2));
    }
}
