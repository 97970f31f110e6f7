//! The Scaler's settings, in the same layers as the rest: defaults, the
//! TOML file, `DBAAS_*` variables, flags (`dbaas up` and `dbaas
//! orchestrator`).

use std::time::Duration;

use crate::core::scaler::{Limit, ScalePolicy};
use crate::error::{Error, Result};

/// Flags of the Scaler (`dbaas up` and `dbaas orchestrator`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ScaleArgs {
    /// Seconds of client reads counted before each scaling decision (the
    /// first window starts at the first read).
    #[arg(long, env = "DBAAS_SCALE_WINDOW")]
    pub scale_window: Option<f64>,
    /// Reads in a window that call for one more slave.
    #[arg(long, env = "DBAAS_READS_PER_SLAVE")]
    pub reads_per_slave: Option<u64>,
    /// The fewest slaves the Scaler keeps.
    #[arg(long, env = "DBAAS_MIN_SLAVES")]
    pub min_slaves: Option<usize>,
    /// The most slaves the Scaler keeps (default 16), or `unbounded` for
    /// the original rule's none (a burst of reads would then start as many
    /// slaves as it calls for).
    #[arg(long, env = "DBAAS_MAX_SLAVES")]
    pub max_slaves: Option<Limit>,
    /// The most slaves one decision starts or stops (default 4), or
    /// `unbounded`.
    #[arg(long, env = "DBAAS_MAX_STEP")]
    pub max_step: Option<Limit>,
    /// Keep the number of slaves as started (no Scaler).
    #[arg(long, env = "DBAAS_NO_SCALER")]
    pub no_scaler: bool,
}

/// The Scaler's settings from a file.
#[derive(Debug, Default)]
pub struct ScaleFile {
    pub scale_window: Option<f64>,
    pub reads_per_slave: Option<u64>,
    pub min_slaves: Option<usize>,
    pub max_slaves: Option<Limit>,
    pub max_step: Option<Limit>,
    pub no_scaler: Option<bool>,
}

impl ScaleArgs {
    /// The policy, flags and environment over `file` over the defaults;
    /// `None` when scaling is off.
    pub fn resolve(&self, file: &ScaleFile) -> Result<Option<ScalePolicy>> {
        if self.no_scaler || file.no_scaler == Some(true) {
            return Ok(None);
        }
        let defaults = ScalePolicy::default();
        let window = match self.scale_window.or(file.scale_window) {
            None => defaults.window,
            Some(secs) => Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|w| !w.is_zero())
                .ok_or_else(|| Error::bad(format!("scale window {secs}: seconds above zero")))?,
        };
        let limit = |flag: Option<Limit>, file: Option<Limit>, default: Option<usize>| {
            flag.or(file).map_or(default, Limit::get)
        };
        let policy = ScalePolicy {
            window,
            reads_per_slave: self
                .reads_per_slave
                .or(file.reads_per_slave)
                .unwrap_or(defaults.reads_per_slave),
            min_slaves: self
                .min_slaves
                .or(file.min_slaves)
                .unwrap_or(defaults.min_slaves),
            max_slaves: limit(self.max_slaves, file.max_slaves, defaults.max_slaves),
            max_step: limit(self.max_step, file.max_step, defaults.max_step),
        };
        policy.check()?;
        Ok(Some(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ScaleArgs)) -> ScaleArgs {
        let mut a = ScaleArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn bounded_by_default_unbounded_when_asked_flags_over_the_file() {
        let file = ScaleFile {
            max_slaves: Some(Limit::At(8)),
            max_step: Some(Limit::Unbounded),
            ..ScaleFile::default()
        };
        let none = ScaleFile::default();
        let p = |a: ScaleArgs, f: &ScaleFile| a.resolve(f).unwrap().unwrap();
        let d = p(ScaleArgs::default(), &none);
        assert_eq!((d.max_slaves, d.max_step), (Some(16), Some(4)));
        let f = p(ScaleArgs::default(), &file);
        assert_eq!((f.max_slaves, f.max_step), (Some(8), None));
        let unbounded = args(|a| a.max_slaves = Some(Limit::Unbounded));
        assert_eq!(p(unbounded, &file).max_slaves, None);
        let two = args(|a| a.max_step = Some(Limit::At(2)));
        assert_eq!(p(two, &file).max_step, Some(2));
    }

    #[test]
    fn bad_settings_are_refused_with_what_is_wrong() {
        let table: &[(ScaleArgs, &str)] = &[
            (args(|a| a.scale_window = Some(-1.0)), "scale window"),
            (args(|a| a.scale_window = Some(f64::NAN)), "scale window"),
            (args(|a| a.reads_per_slave = Some(0)), "reads per slave"),
            (args(|a| a.min_slaves = Some(0)), "at least one slave"),
            (
                args(|a| {
                    a.min_slaves = Some(4);
                    a.max_slaves = Some(Limit::At(2));
                }),
                "max slaves (2) is below min slaves (4)",
            ),
            (args(|a| a.min_slaves = Some(17)), "max slaves (16)"),
            (args(|a| a.max_step = Some(Limit::At(0))), "max step 0"),
        ];
        for (a, says) in table {
            let e = a.resolve(&ScaleFile::default()).unwrap_err().to_string();
            assert!(e.contains(says), "{a:?}: {e}");
        }
    }
}
