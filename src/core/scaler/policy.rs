//! The Scaler's policy: how long reads are counted, how many slaves they
//! call for, and how far one decision may go.
//!
//! The original rule, `max(1, ceil(reads / 20))` slaves every 120 s, has
//! no maximum: one burst of reads would call for thousands of slaves, each
//! taking a snapshot of the master. So by default at most
//! [`DEFAULT_MAX_SLAVES`] slaves are kept, and one decision starts or stops
//! at most [`DEFAULT_MAX_STEP`]; either bound is lifted only when asked
//! for, by [`Limit::Unbounded`] (`unbounded` on the command line).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most slaves kept unless another maximum is asked for.
pub const DEFAULT_MAX_SLAVES: usize = 16;
/// The most slaves one decision starts or stops unless asked otherwise.
pub const DEFAULT_MAX_STEP: usize = 4;

/// When and how far to scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScalePolicy {
    /// How long reads are counted before each decision.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Reads in a window one slave is there for.
    pub reads_per_slave: u64,
    pub min_slaves: usize,
    /// The most slaves kept; None: no maximum (the original rule, only
    /// when asked for).
    pub max_slaves: Option<usize>,
    /// The most slaves one decision starts or stops; None: no limit.
    pub max_step: Option<usize>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            window: Duration::from_secs(120),
            reads_per_slave: 20,
            min_slaves: 1,
            max_slaves: Some(DEFAULT_MAX_SLAVES),
            max_step: Some(DEFAULT_MAX_STEP),
        }
    }
}

impl ScalePolicy {
    /// Refuses a policy that cannot work, saying which setting is wrong.
    pub fn check(&self) -> Result<()> {
        if self.window.is_zero() {
            return Err(Error::bad("the scale window must be longer than zero"));
        }
        if self.reads_per_slave == 0 {
            return Err(Error::bad("reads per slave must be at least 1"));
        }
        if self.min_slaves == 0 {
            return Err(Error::bad("at least one slave is needed to serve reads"));
        }
        if let Some(max) = self.max_slaves.filter(|&m| m < self.min_slaves) {
            return Err(Error::bad(format!(
                "max slaves ({max}) is below min slaves ({}); give a larger maximum, or \"unbounded\"",
                self.min_slaves
            )));
        }
        if self.max_step == Some(0) {
            return Err(Error::bad(
                "max step 0 would never start or stop a slave: give at least 1, or \"unbounded\"",
            ));
        }
        Ok(())
    }

    /// The window in milliseconds (the core's clock).
    pub(crate) fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// How many slaves `reads` in one window call for before the bounds: one
/// per `reads_per_slave`, rounded up, at least one.
pub fn wanted_slaves(reads: u64, policy: &ScalePolicy) -> u64 {
    reads.div_ceil(policy.reads_per_slave.max(1)).max(1)
}

/// How many slaves `reads` in one window call for: one per
/// `reads_per_slave` (rounded up), at least one, within the bounds.
pub fn target_slaves(reads: u64, policy: &ScalePolicy) -> usize {
    let want = usize::try_from(wanted_slaves(reads, policy)).unwrap_or(usize::MAX);
    let min = policy.min_slaves.max(1);
    let max = policy.max_slaves.unwrap_or(usize::MAX).max(min);
    want.clamp(min, max)
}

/// Where one decision goes from `from` slaves toward `to`: at most
/// `max_step` nearer.
pub fn step_toward(from: usize, to: usize, max_step: Option<usize>) -> usize {
    let step = max_step.unwrap_or(usize::MAX);
    if to >= from {
        from.saturating_add((to - from).min(step))
    } else {
        from - (from - to).min(step)
    }
}

/// A bound as it is given: a number, or `unbounded` (the flags
/// `--max-slaves` and `--max-step`, their variables and the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    At(usize),
    Unbounded,
}

impl Limit {
    /// The bound, None when there is none.
    pub fn get(self) -> Option<usize> {
        match self {
            Limit::At(n) => Some(n),
            Limit::Unbounded => None,
        }
    }
}

const LIMIT_FORM: &str = "a whole number, or \"unbounded\"";

impl FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unbounded") {
            return Ok(Limit::Unbounded);
        }
        s.parse()
            .map(Limit::At)
            .map_err(|_| format!("{s:?}: {LIMIT_FORM}"))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::At(n) => write!(f, "{n}"),
            Limit::Unbounded => f.write_str("unbounded"),
        }
    }
}

/// A TOML file gives a limit as an integer or as the string `unbounded`.
impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(LimitVisitor)
    }
}

struct LimitVisitor;

impl serde::de::Visitor<'_> for LimitVisitor {
    type Value = Limit;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(LIMIT_FORM)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Limit, E> {
        usize::try_from(n)
            .map(Limit::At)
            .map_err(|_| E::custom(format!("{n}: {LIMIT_FORM}")))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Limit, E> {
        u64::try_from(n)
            .map_err(|_| E::custom(format!("{n}: {LIMIT_FORM}")))
            .and_then(|n| self.visit_u64(n))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Limit, E> {
        s.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per: u64, min: usize, max: Option<usize>) -> ScalePolicy {
        ScalePolicy {
            reads_per_slave: per,
            min_slaves: min,
            max_slaves: max,
            ..ScalePolicy::default()
        }
    }

    #[test]
    fn one_slave_per_twenty_reads_at_least_one_within_bounds() {
        let table: &[(u64, ScalePolicy, usize)] = &[
            (0, policy(20, 1, Some(8)), 1),
            (1, policy(20, 1, Some(8)), 1),
            (20, policy(20, 1, Some(8)), 1),
            (21, policy(20, 1, Some(8)), 2),
            (45, policy(20, 1, Some(8)), 3),
            (61, policy(20, 1, Some(8)), 4),
            (10_000, policy(20, 1, Some(8)), 8),
            (0, policy(20, 2, Some(8)), 2),
            (45, policy(20, 1, Some(2)), 2),
            (45, policy(10, 1, Some(8)), 5),
            (45, policy(20, 4, Some(2)), 4),
            (5, policy(0, 0, Some(0)), 1),
            (u64::MAX, policy(1, 1, None), usize::MAX),
            // By default at most 16, whatever the burst.
            (10_000, ScalePolicy::default(), 16),
            (74_000, ScalePolicy::default(), 16),
            (300, ScalePolicy::default(), 15),
            (0, ScalePolicy::default(), 1),
            // The original rule, unbounded, only when asked for.
            (10_000, policy(20, 1, None), 500),
            (74_000, policy(20, 1, None), 3_700),
        ];
        for (reads, p, want) in table {
            assert_eq!(target_slaves(*reads, p), *want, "{reads} reads, {p:?}");
        }
    }

    #[test]
    fn a_decision_moves_at_most_a_step() {
        let table: &[(usize, usize, Option<usize>, usize)] = &[
            (1, 16, Some(4), 5),
            (1, 3, Some(4), 3),
            (10, 1, Some(4), 6),
            (5, 1, Some(4), 1),
            (3, 3, Some(4), 3),
            (1, 3_700, None, 3_700),
            (3_700, 1, None, 1),
            (0, usize::MAX, Some(1), 1),
            (usize::MAX, 0, None, 0),
        ];
        for &(from, to, step, want) in table {
            assert_eq!(
                step_toward(from, to, step),
                want,
                "{from} to {to}, {step:?}"
            );
        }
    }

    #[test]
    fn impossible_policies_are_refused() {
        assert!(ScalePolicy::default().check().is_ok());
        assert!(policy(20, 1, None).check().is_ok());
        assert!(policy(0, 1, Some(8)).check().is_err());
        assert!(policy(20, 0, Some(8)).check().is_err());
        assert!(policy(20, 3, Some(2)).check().is_err());
        let no_step = ScalePolicy {
            max_step: Some(0),
            ..ScalePolicy::default()
        };
        assert!(no_step.check().is_err());
        let zero = ScalePolicy {
            window: Duration::ZERO,
            ..ScalePolicy::default()
        };
        assert!(zero.check().is_err());
    }

    #[test]
    fn limits_are_numbers_or_unbounded() {
        let table: &[(&str, Option<Limit>)] = &[
            ("16", Some(Limit::At(16))),
            (" 4 ", Some(Limit::At(4))),
            ("0", Some(Limit::At(0))),
            ("unbounded", Some(Limit::Unbounded)),
            ("Unbounded", Some(Limit::Unbounded)),
            ("-1", None),
            ("none", None),
            ("", None),
            ("1.5", None),
            ("99999999999999999999999", None),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Limit>().ok(), *want, "{text:?}");
        }
        #[derive(Deserialize)]
        struct F {
            m: Limit,
        }
        let toml = |s: &str| toml::from_str::<F>(s).map(|f| f.m).ok();
        assert_eq!(toml("m = 8"), Some(Limit::At(8)));
        assert_eq!(toml("m = \"unbounded\""), Some(Limit::Unbounded));
        assert_eq!(toml("m = -2"), None);
        assert_eq!(toml("m = \"many\""), None);
        assert_eq!(Limit::Unbounded.get(), None);
        assert_eq!(Limit::At(3).to_string(), "3");
    }
}
