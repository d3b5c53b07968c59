//! The per-node report rate: a token bucket for each node id (as a GCRA, one instant per
//! node), so one node — or anyone holding the fleet's report token and sending under one
//! node id — cannot flood the report table. A node may send [`ReportRate::burst`] reports at
//! once and one more every [`ReportRate::interval`]; beyond that `POST /v1/reports` answers
//! 429 with `Retry-After`, and the agent keeps the report queued for a later poll.
//!
//! The limiter's own memory is bounded: it tracks at most [`ReportRate::max_nodes`] node ids.
//! A node whose bucket has refilled is forgotten when room is needed (it would get the same
//! full bucket back), so a fleet of quiet nodes never fills it; when every tracked node is
//! still spending (invented ids, say), a node not yet tracked is refused until some refill.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ReportRate;

/// Shortest time between two sweeps of a full table: a flood of new ids costs one scan a
/// second, not one per request.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The per-node limiter; shared by all connections.
#[derive(Debug)]
pub struct Limiter {
    rate: ReportRate,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per node: when its bucket is full again (the GCRA's theoretical arrival time).
    full_at: HashMap<String, Instant>,
    last_sweep: Option<Instant>,
}

impl Limiter {
    /// A limiter with no node tracked yet.
    pub fn new(rate: ReportRate) -> Limiter {
        Limiter {
            rate,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes one report from `node`'s bucket at `now`; `Err(wait)` when it is empty (or the
    /// table is full of spending nodes), `wait` being how long until it may send again.
    pub fn check(&self, node: &str, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.rate.interval.saturating_mul(self.rate.burst);
        if !state.full_at.contains_key(node) && state.full_at.len() >= self.rate.max_nodes {
            state.sweep(now);
            if state.full_at.len() >= self.rate.max_nodes {
                return Err(self.rate.interval);
            }
        }
        let full_at = state.full_at.get(node).copied().unwrap_or(now).max(now);
        // Spending one more report would push the full time beyond `window` from now.
        let next = full_at + self.rate.interval;
        match (next - now).checked_sub(window) {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => {
                state.full_at.insert(node.to_owned(), next);
                Ok(())
            }
        }
    }

    /// Node ids tracked now (for tests).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.full_at.len()
    }
}

impl State {
    /// Forgets the nodes whose bucket is full again, at most once per [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.full_at.retain(|_, full_at| *full_at > now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rate(burst: u32, secs: u64, max_nodes: usize) -> ReportRate {
        ReportRate {
            burst,
            interval: Duration::from_secs(secs),
            max_nodes,
        }
    }

    #[test]
    fn a_node_gets_its_burst_then_one_report_per_interval() {
        let limiter = Limiter::new(rate(3, 10, 100));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("n", t0), Ok(()));
        }
        assert_eq!(limiter.check("n", t0), Err(Duration::from_secs(10)));
        assert_eq!(limiter.check("other", t0), Ok(()), "other nodes are apart");
        let later = t0 + Duration::from_secs(4);
        assert_eq!(limiter.check("n", later), Err(Duration::from_secs(6)));
        let refilled_one = t0 + Duration::from_secs(10);
        assert_eq!(limiter.check("n", refilled_one), Ok(()));
        assert!(limiter.check("n", refilled_one).is_err());
    }

    #[test]
    fn the_tracked_nodes_are_bounded_and_idle_ones_make_room() {
        let limiter = Limiter::new(rate(2, 10, 3));
        let t0 = Instant::now();
        for node in ["a", "b", "c"] {
            assert_eq!(limiter.check(node, t0), Ok(()));
        }
        assert_eq!(limiter.check("d", t0), Err(Duration::from_secs(10)));
        assert_eq!(limiter.tracked(), 3);
        // Ten seconds on, every bucket is full again: the idle nodes are forgotten.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limiter.check("d", t1), Ok(()));
        assert_eq!(limiter.tracked(), 1);
    }
}
