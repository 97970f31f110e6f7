//! Random schedules: a seed sets up the cluster, then clients write while
//! a nemesis kills masters, slaves, promotees and every slave at once at
//! random moments; then the faults stop and the checker judges the run.

use std::fmt;

use dbaas::core::election::Succession;

use super::check;
use super::world::{Role, Setup, World};

/// Steps of a run's faulty part.
const FAULTY_STEPS: u64 = 600;

/// A run that broke a promise: its seed, why, and what led there.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub why: String,
    pub trace: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} broke a promise: {}\nreplay: DBAAS_SIM_SEED={} cargo test --test sim replay\n{}",
            self.seed, self.why, self.seed, self.trace
        )
    }
}

/// The world's trace, one event a line.
pub fn trace(w: &World) -> String {
    w.trace
        .iter()
        .map(|e| format!("{:>6} ms  {}\n", e.at, e.what))
        .collect()
}

fn setup(rng: &mut fastrand::Rng) -> Setup {
    let setup = Setup {
        slaves: rng.usize(1..=3),
        queue_cap: rng.usize(4..=128),
        flush_chance: [0.0, 0.02, 0.2][rng.usize(0..3)],
        refuse_chance: [0.0, 0.0, 0.05][rng.usize(0..3)],
        respawn_after: (1, rng.u64(1..=80)),
        session_ms: rng.u64(10..=60),
        watch_lag: rng.u64(0..=10),
        hung_after: rng.u64(20..=300),
        ..Setup::default()
    };
    // From the queue's cap (no draw of its own, so that a seed sets up
    // the cluster as it did before logs): some logs outlast what a queue
    // keeps, others do not.
    Setup {
        log_writes: setup.queue_cap * 3 / 4 + 1,
        // Restores in half the schedules, from the cap likewise.
        restores: setup.queue_cap.is_multiple_of(2),
        ..setup
    }
}

/// One random schedule; answers the trace if every promise held.
pub fn run(seed: u64, rule: Succession) -> Result<String, Failure> {
    run_mutated(seed, rule, None)
}

/// [`run`], with a bug planted in the master's pipeline.
pub fn run_mutated(
    seed: u64,
    rule: Succession,
    pipeline: Option<dbaas::core::pipeline::Mutation>,
) -> Result<String, Failure> {
    run_with(seed, rule, |s| s.pipeline_mutation = pipeline)
}

/// [`run`], with the setup the seed draws changed by `tweak`.
pub fn run_with(
    seed: u64,
    rule: Succession,
    tweak: impl FnOnce(&mut Setup),
) -> Result<String, Failure> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut setup = setup(&mut rng);
    // The orchestrator's windows from the seed itself (not drawn, so that
    // the seeds found before them replay their schedules): 1-4 read
    // batches and 1-3 write batches unanswered.
    setup.windows = (1 + (seed % 4) as usize, 1 + ((seed / 4) % 3) as usize);
    tweak(&mut setup);
    let mut w = World::new(rng.u64(..), setup, rule);
    let (write_chance, fault_chance) = (rng.f64() * 0.5, rng.f64() * 0.03);
    let read_chance = rng.f64() * 0.5;
    if rng.bool() {
        w.with_scaler(super::scale::policy());
    }
    for _ in 0..FAULTY_STEPS {
        if rng.f64() < write_chance {
            w.client_write();
        }
        if rng.f64() < read_chance {
            w.reads += rng.u64(1..=4);
            if rng.u8(0..8) == 0 {
                w.strong_read();
            }
        }
        if rng.f64() < fault_chance {
            fault(&mut w, &mut rng);
        }
        w.step();
    }
    match check::settle(&mut w) {
        Ok(()) => Ok(trace(&w)),
        Err(why) => Err(Failure {
            seed,
            why,
            trace: trace(&w),
        }),
    }
}

/// One fault, drawn at random.
fn fault(w: &mut World, rng: &mut fastrand::Rng) {
    let live: Vec<(u64, Role)> = w
        .workers
        .values()
        .filter(|x| x.alive && !x.retired)
        .map(|x| (x.id, x.role))
        .collect();
    if live.is_empty() {
        return;
    }
    match rng.u8(0..11) {
        10 => w.another_orchestrator_leads(),
        9 => {
            let slaves = w.slaves();
            if !slaves.is_empty() {
                w.expire_sync_queue(slaves[rng.usize(0..slaves.len())]);
            }
        }
        8 => w.restart_orchestrator(),
        6 => w.broker_restart(),
        7 => w.coordinator_outage(rng.u64(1..=300)),
        4 => {
            let (id, _) = live[rng.usize(0..live.len())];
            w.pause(id, rng.u64(1..=200));
        }
        0 => {
            if let Some(m) = w.named().map(|m| m.id) {
                w.kill(m);
            }
        }
        1 => w.kill(live[rng.usize(0..live.len())].0),
        2 => kill_slaves(w),
        _ => {
            let promoting = live
                .iter()
                .find(|(_, r)| matches!(r, Role::Promoting { .. }));
            if let Some(&(id, _)) = promoting {
                w.kill(id);
            }
        }
    }
}

/// Kills every live worker that does not lead (promotees included).
pub fn kill_slaves(w: &mut World) {
    for id in w.slaves() {
        w.kill(id);
    }
}
