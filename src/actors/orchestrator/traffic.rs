//! What clients saw over the last minute: how many reads and writes each
//! second, how many failed, and their latency percentiles, as the handle
//! measures them (from the request's arrival to its answer, retries
//! included). Kept per second in a ring of 60, each second a small
//! histogram, so recording is a few additions under a lock and the view
//! costs the same at any rate.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Seconds kept.
pub const WINDOW_S: u64 = 60;
/// Sub-buckets per power of two of microseconds: percentiles are exact to
/// within an eighth of their value.
const SUB: u32 = 8;
/// Enough for every u64: the largest lands in `(63 - 2) * SUB + SUB - 1`.
const BUCKETS: usize = 62 * SUB as usize;

/// Which kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// A histogram of latencies in microseconds.
#[derive(Clone)]
struct Hist {
    count: u64,
    errors: u64,
    buckets: Box<[u32; BUCKETS]>,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            count: 0,
            errors: 0,
            buckets: Box::new([0; BUCKETS]),
        }
    }
}

/// The bucket of `us`: 0..SUB hold 0..SUB exactly; above, each power of two
/// is cut into SUB equal parts.
fn bucket(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let log = 63 - us.leading_zeros(); // >= 3
    let shift = log - SUB.trailing_zeros();
    let sub = (us >> shift) as u32 - SUB; // 0..SUB
    ((log - SUB.trailing_zeros() + 1) * SUB + sub) as usize
}

/// The largest value bucket `b` holds.
fn upper(b: usize) -> u64 {
    let b = b as u32;
    if b < SUB {
        return u64::from(b);
    }
    let shift = b / SUB - 1;
    let sub = u128::from(b % SUB + SUB);
    u64::try_from(((sub + 1) << shift) - 1).unwrap_or(u64::MAX)
}

impl Hist {
    fn add(&mut self, us: u64, ok: bool) {
        self.count += 1;
        if !ok {
            self.errors += 1;
        }
        let b = bucket(us).min(BUCKETS - 1);
        self.buckets[b] = self.buckets[b].saturating_add(1);
    }

    fn merge(&mut self, other: &Hist) {
        self.count += other.count;
        self.errors += other.errors;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The latency at quantile `q` (0..=1), in microseconds: the upper
    /// bound of its bucket; none without a sample.
    fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(upper(b));
            }
        }
        None
    }
}

#[derive(Clone, Default)]
struct Second {
    /// Unix seconds it counts, or none while unused.
    at: Option<u64>,
    reads: Hist,
    writes: Hist,
}

#[derive(Default)]
struct Ring {
    seconds: Vec<Second>,
    /// The first second recorded.
    since: Option<u64>,
}

impl Ring {
    fn slot(&mut self, now_s: u64) -> &mut Second {
        if self.seconds.is_empty() {
            self.seconds = vec![Second::default(); WINDOW_S as usize];
        }
        self.since.get_or_insert(now_s);
        let s = &mut self.seconds[(now_s % WINDOW_S) as usize];
        if s.at != Some(now_s) {
            *s = Second {
                at: Some(now_s),
                ..Second::default()
            };
        }
        s
    }
}

/// One kind of request over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KindView {
    /// Requests per second over the seconds of the window that have
    /// passed (the second under way left out).
    pub rate: f64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests in each whole second of the window, oldest first.
    pub per_second: Vec<u64>,
}

/// The last minute of requests, as the cluster view shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficView {
    pub window_s: u64,
    pub reads: KindView,
    pub writes: KindView,
}

/// Shared by every clone of the handle.
#[derive(Clone, Default)]
pub struct Traffic {
    ring: Arc<Mutex<Ring>>,
}

impl Traffic {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request of `kind` that took `us` microseconds, at the
    /// wall clock's second.
    pub fn record(&self, kind: Kind, us: u64, ok: bool) {
        self.record_at(crate::store::wall_clock_ms() / 1000, kind, us, ok);
    }

    /// [`Traffic::record`] at Unix second `now_s`.
    pub fn record_at(&self, now_s: u64, kind: Kind, us: u64, ok: bool) {
        let mut ring = self.ring();
        let s = ring.slot(now_s);
        match kind {
            Kind::Read => s.reads.add(us, ok),
            Kind::Write => s.writes.add(us, ok),
        }
    }

    /// The window as of the wall clock.
    pub fn view(&self) -> TrafficView {
        self.view_at(crate::store::wall_clock_ms() / 1000)
    }

    /// The window of the whole seconds before `now_s`, and the
    /// percentiles over them and the second under way.
    pub fn view_at(&self, now_s: u64) -> TrafficView {
        let ring = self.ring();
        let from = now_s.saturating_sub(WINDOW_S - 1);
        let kind = |pick: fn(&Second) -> &Hist| {
            let mut all = Hist::default();
            let mut per_second = Vec::with_capacity(WINDOW_S as usize - 1);
            for t in from..now_s {
                let n = ring
                    .seconds
                    .get((t % WINDOW_S) as usize)
                    .filter(|s| s.at == Some(t))
                    .map(|s| pick(s).count)
                    .unwrap_or(0);
                per_second.push(n);
            }
            for s in &ring.seconds {
                if s.at.is_some_and(|t| t >= from && t <= now_s) {
                    all.merge(pick(s));
                }
            }
            // The seconds that passed since the first request, at most
            // the window's whole ones.
            let passed = ring
                .since
                .map(|since| now_s.saturating_sub(since.max(from)))
                .unwrap_or(0);
            let whole: u64 = per_second.iter().rev().take(passed as usize).sum();
            let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
            KindView {
                rate: if passed == 0 {
                    0.0
                } else {
                    whole as f64 / passed as f64
                },
                errors: all.errors,
                p50_ms: ms(all.quantile(0.50)),
                p99_ms: ms(all.quantile(0.99)),
                per_second,
            }
        };
        TrafficView {
            window_s: WINDOW_S,
            reads: kind(|s| &s.reads),
            writes: kind(|s| &s.writes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_an_eighth() {
        let mut last = 0;
        for us in (0..5000).chain([65_535, 1 << 20, 123_456_789, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last, "buckets grow with the value");
            last = b;
            if b < BUCKETS {
                assert!(upper(b) >= us, "{us} in {b} above its upper {}", upper(b));
                assert!(
                    upper(b) as f64 <= (us as f64) * 1.125 + 1.0,
                    "{us}: {}",
                    upper(b)
                );
            }
        }
        for b in 1..BUCKETS {
            assert_eq!(bucket(upper(b)), b);
            assert_eq!(bucket(upper(b - 1) + 1), b);
        }
    }

    #[test]
    fn rates_count_whole_seconds_and_percentiles_the_window() {
        let t = Traffic::default();
        assert_eq!(t.view_at(1000).reads.rate, 0.0);
        assert_eq!(t.view_at(1000).reads.p99_ms, None);
        // 100 reads a second for 10 seconds, one of them slow each second.
        for s in 1000..1010 {
            for i in 0..100 {
                let us = if i == 0 { 80_000 } else { 1_000 };
                t.record_at(s, Kind::Read, us, true);
            }
        }
        t.record_at(1005, Kind::Write, 5_000, false);
        let v = t.view_at(1010);
        assert_eq!(v.reads.rate, 100.0);
        assert_eq!(v.reads.per_second.len(), WINDOW_S as usize - 1);
        assert_eq!(v.reads.per_second.iter().sum::<u64>(), 1000);
        let p50 = v.reads.p50_ms.unwrap();
        assert!((1.0..=1.125).contains(&p50), "{p50}");
        let p99 = v.reads.p99_ms.unwrap();
        assert!(
            (1.0..=1.125).contains(&p99),
            "1% slow is past the 99th: {p99}"
        );
        assert_eq!(v.writes.errors, 1);
        assert_eq!(v.writes.rate, 0.1);
        // Two slow in a hundred lift the 99th.
        t.record_at(1010, Kind::Read, 90_000, true);
        t.record_at(1010, Kind::Read, 90_000, true);
        let p99 = t.view_at(1010).reads.p99_ms.unwrap();
        assert!(p99 >= 80.0, "{p99}");
        // A minute later the old seconds are gone.
        let v = t.view_at(1100);
        assert_eq!(v.reads.per_second.iter().sum::<u64>(), 0);
        assert_eq!(v.reads.rate, 0.0);
        assert_eq!(v.reads.p99_ms, None);
        assert_eq!(v.writes.errors, 0);
    }

    #[test]
    fn a_slot_reused_a_minute_later_starts_empty() {
        let t = Traffic::default();
        t.record_at(0, Kind::Read, 10, true);
        t.record_at(WINDOW_S, Kind::Read, 10, true);
        let v = t.view_at(WINDOW_S + 1);
        assert_eq!(v.reads.per_second.iter().sum::<u64>(), 1);
    }
}
