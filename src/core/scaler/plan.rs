//! A decision being carried out: what it has left to start or stop, what
//! came of it so far, and how it is worded.

use super::policy::{step_toward, target_slaves, wanted_slaves};
use super::{ClusterSnapshot, Effect, Member, MemberState, ScaleDecision, ScalePolicy};

/// A decision to make once the cluster has been looked at.
#[derive(Debug, Default)]
pub(super) struct Due {
    pub reads: u64,
    /// Who asked for it (none for a window's end).
    pub tickets: Vec<u64>,
}

/// A decision being carried out.
#[derive(Debug)]
pub(super) struct Plan {
    pub decision: ScaleDecision,
    pub starts_left: usize,
    pub stops_left: usize,
    tickets: Vec<u64>,
    /// When a start last began or ended (for the catch-up patience).
    pub progress_at: u64,
    /// What fell short, for the outcome.
    short: Vec<String>,
}

impl Plan {
    /// The decision `due` calls for with `from` slaves now.
    pub fn new(policy: &ScalePolicy, due: Due, from: usize, now: u64) -> Plan {
        let to = target_slaves(due.reads, policy);
        let step_to = step_toward(from, to, policy.max_step);
        let wanted = wanted_slaves(due.reads, policy);
        let decision = ScaleDecision {
            at: now,
            reads: due.reads,
            from,
            to,
            wanted,
            step_to,
            started: Vec::new(),
            stopped: Vec::new(),
            done: false,
            reason: reason(policy, due.reads, wanted, from, to, step_to),
            outcome: None,
        };
        Plan {
            starts_left: step_to.saturating_sub(from),
            stops_left: from.saturating_sub(step_to),
            tickets: due.tickets,
            progress_at: now,
            short: Vec::new(),
            decision,
        }
    }

    /// Nothing is left to begin.
    pub fn begun(&self) -> bool {
        self.starts_left == 0 && self.stops_left == 0
    }

    pub fn drop_starts(&mut self, why: &str) {
        if self.starts_left > 0 {
            self.short
                .push(format!("{} not started: {why}", self.starts_left));
            self.starts_left = 0;
        }
    }

    pub fn drop_stops(&mut self, why: &str) {
        if self.stops_left > 0 {
            self.short
                .push(format!("{} not stopped: {why}", self.stops_left));
            self.stops_left = 0;
        }
    }

    /// A start ended: `id` runs unless there is an `error`.
    pub fn started(&mut self, id: Option<u64>, error: Option<String>, now: u64) {
        self.progress_at = now;
        match (id, error) {
            (Some(id), None) => self.decision.started.push(id),
            (Some(id), Some(e)) => self.short.push(format!("worker {id} did not start ({e})")),
            (None, e) => self
                .short
                .push(format!("a slave did not start ({})", e.unwrap_or_default())),
        }
    }

    pub fn retired(&mut self, id: u64, error: Option<String>) {
        // It is gone or going whatever went wrong: it counts as stopped.
        self.decision.stopped.push(id);
        if let Some(e) = error {
            self.short
                .push(format!("worker {id} stopped with an error ({e})"));
        }
    }

    /// The watcher kept `id`: no more stops this time.
    pub fn refused(&mut self, id: u64) {
        self.stops_left = self.stops_left.saturating_add(1);
        self.drop_stops(&format!(
            "the watcher kept worker {id} (it leads, or an election runs)"
        ));
    }

    /// Begins nothing more, and refuses whoever asked for it.
    pub fn abandon(&mut self, why: &str) -> Option<Effect> {
        self.drop_starts(why);
        self.drop_stops(why);
        let tickets = std::mem::take(&mut self.tickets);
        (!tickets.is_empty()).then(|| refuse(tickets, why))
    }

    /// Marks the decision done with its outcome; answers it and whoever
    /// asked for it.
    pub fn finish(self) -> (ScaleDecision, Vec<Effect>) {
        let mut d = self.decision;
        d.done = true;
        let mut parts = Vec::new();
        if !d.started.is_empty() {
            parts.push(format!("started {:?}", d.started));
        }
        if !d.stopped.is_empty() {
            parts.push(format!("stopped {:?}", d.stopped));
        }
        parts.extend(self.short);
        d.outcome = (!parts.is_empty()).then(|| parts.join("; "));
        let mut fx = vec![Effect::Finished(d.clone())];
        if !self.tickets.is_empty() {
            fx.push(Effect::Answer {
                tickets: self.tickets,
                result: Ok(d.clone()),
            });
        }
        (d, fx)
    }
}

/// The slave to stop next: never the master; first a worker that runs but
/// is not registered (hung, or its session ended), else the registered
/// slave with the highest pid.
pub(super) fn surplus_slave(view: &ClusterSnapshot) -> Option<Member> {
    let others = || view.workers.iter().filter(|w| Some(w.pid) != view.master);
    let hung = others()
        .filter(|w| w.state == MemberState::Unregistered)
        .max_by_key(|w| w.pid);
    let slave = others()
        .filter(|w| matches!(w.state, MemberState::Serving | MemberState::CatchingUp))
        .max_by_key(|w| w.pid);
    hung.or(slave).copied()
}

pub(super) fn refuse(tickets: Vec<u64>, why: &str) -> Effect {
    Effect::Answer {
        tickets,
        result: Err(why.to_owned()),
    }
}

/// No decision for `due`'s reads: said as an event, and to whoever asked.
pub(super) fn no_decision(due: Due, why: &str) -> Vec<Effect> {
    let mut fx = vec![Effect::NoDecision {
        detail: format!("{} reads: no change ({why})", due.reads),
    }];
    if !due.tickets.is_empty() {
        fx.push(refuse(due.tickets, why));
    }
    fx
}

/// Why: the reads, the rule, the bounds that held it back, and what this
/// decision does.
fn reason(p: &ScalePolicy, reads: u64, wanted: u64, from: usize, to: usize, step: usize) -> String {
    let mut s = format!(
        "{reads} reads in {} s at {} a slave: {to} slave(s)",
        p.window.as_secs_f64(),
        p.reads_per_slave
    );
    let to_u64 = u64::try_from(to).unwrap_or(u64::MAX);
    if wanted > to_u64 {
        s += &format!(" (capped by max slaves; {wanted} called for)");
    } else if wanted < to_u64 {
        s += &format!(" (min slaves {})", p.min_slaves);
    }
    let (verb, n) = if step >= from {
        ("start", step - from)
    } else {
        ("stop", from - step)
    };
    if n == 0 {
        return s + "; no change";
    }
    s += &format!("; {verb} {n} ({from} now)");
    if step != to {
        let max = p.max_step.unwrap_or(n);
        s += &format!(", at most {max} a decision (max step): the rest in the next ones");
    }
    s
}
