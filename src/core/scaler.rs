//! The Scaler's decisions as a state machine: how many slaves a window's
//! reads call for, and how fast to get there.
//!
//! [`ScalerCore::on`] takes an [`Input`] (a tick with the reads counted so
//! far, a "decide now" request, what the cluster looks like, a start or a
//! stop that ended, a stop of the Scaler) and the time, and answers the
//! [`Effect`]s to carry out. The driver (`actors::scaler`) owns the clock,
//! the read counter, the runtime and the watcher; a simulator can drive the
//! same core on a virtual clock.
//!
//! What it guarantees (`DBAAS.md`, promise 7): at the end of every window
//! the number of slaves is set by [`target_slaves`], within a bounded
//! default maximum; one decision starts or stops at most `max_step`
//! slaves; at most [`CATCHING_UP_AT_ONCE`] new slaves take a snapshot at a
//! time, so a scale-up never starves the master; a decision is announced
//! the moment it is made, with its reason, and its progress shows until it
//! is carried out; nothing is decided while no master leads, and the
//! master is never stopped; a stop abandons the starts not yet begun and
//! waits only for those under way.

mod io;
mod plan;
mod policy;
#[cfg(test)]
mod tests;

pub use io::{ClusterSnapshot, Effect, Input, Member, MemberState, ScaleDecision, ScalerView};
use plan::{no_decision, refuse, surplus_slave, Due, Plan};

pub use policy::{
    step_toward, target_slaves, wanted_slaves, Limit, ScalePolicy, DEFAULT_MAX_SLAVES,
    DEFAULT_MAX_STEP,
};

use std::collections::BTreeSet;

/// The most new slaves catching up at once (each takes a snapshot of the
/// master: more at once would starve it).
pub const CATCHING_UP_AT_ONCE: usize = 2;
/// How long a decision waits for slaves to catch up before it gives up the
/// starts it has left (the next decision tries again).
pub const CATCH_UP_PATIENCE_MS: u64 = 60_000;

/// The Scaler's state: see the module documentation.
#[derive(Debug)]
pub struct ScalerCore {
    policy: ScalePolicy,
    /// The read count when the window under way began counting.
    base: u64,
    /// When the window under way began (at its first read).
    window_from: Option<u64>,
    due: Option<Due>,
    plan: Option<Plan>,
    last: Option<ScaleDecision>,
    /// Slaves started here that do not serve yet, by id.
    catching_up: BTreeSet<u64>,
    starts_in_flight: usize,
    retire_in_flight: bool,
    observing: bool,
    stopping: bool,
    stopped: bool,
}

impl ScalerCore {
    pub fn new(policy: ScalePolicy) -> Self {
        ScalerCore {
            policy,
            base: 0,
            window_from: None,
            due: None,
            plan: None,
            last: None,
            catching_up: BTreeSet::new(),
            starts_in_flight: 0,
            retire_in_flight: false,
            observing: false,
            stopping: false,
            stopped: false,
        }
    }

    pub fn policy(&self) -> &ScalePolicy {
        &self.policy
    }

    /// Whether [`Effect::Stopped`] was given.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// What the cluster view shows, `reads` being the driver's count.
    pub fn view(&self, reads: u64, now: u64) -> ScalerView {
        let ends = |from: u64| from.saturating_add(self.policy.window_ms());
        ScalerView {
            policy: self.policy,
            reads: reads.saturating_sub(self.base),
            next_decision_in: self
                .window_from
                .map(|from| ends(from).saturating_sub(now) as f64 / 1000.0),
            last: self.current().cloned(),
        }
    }

    /// The decision under way, else the last one.
    pub fn current(&self) -> Option<&ScaleDecision> {
        self.plan
            .as_ref()
            .map(|p| &p.decision)
            .or(self.last.as_ref())
    }

    /// Takes `input` at time `now` (milliseconds of a clock that never
    /// goes back); answers what to do.
    pub fn on(&mut self, input: Input, now: u64) -> Vec<Effect> {
        if self.stopped {
            return self.after_stop(input);
        }
        // Looks the plan asks for when it waits for room to start are made
        // at the pace of the ticks, not one right after the other.
        let eager = !matches!(input, Input::Cluster(_) | Input::NoCluster(_));
        let mut fx = match input {
            Input::Tick { reads } => self.tick(reads, now),
            Input::DecideNow { reads, ticket } => self.decide_now(reads, ticket),
            Input::Cluster(view) => self.looked(&view, now),
            Input::NoCluster(error) => self.no_view(&error),
            Input::Started { id } => self.started(Some(id), None, now),
            Input::StartFailed { id, error } => self.started(id, Some(error), now),
            Input::Retired { id, error } => self.retired(id, error),
            Input::RetireRefused { id } => self.refused(id),
            Input::Stop => self.stop(),
        };
        fx.extend(self.settle());
        fx.extend(self.pump(eager));
        fx
    }

    /// Once stopped, a decision asked for is refused and a stop is
    /// answered again; nothing else happens.
    fn after_stop(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::DecideNow { ticket, .. } => vec![refuse(vec![ticket], "the scaler stopped")],
            Input::Stop => vec![Effect::Stopped],
            _ => Vec::new(),
        }
    }

    fn tick(&mut self, reads: u64, now: u64) -> Vec<Effect> {
        if self.stopping {
            return Vec::new();
        }
        // A counter reset behind the core's back starts counting afresh.
        self.base = self.base.min(reads);
        match self.window_from {
            None if reads > self.base => self.window_from = Some(now),
            Some(from) if now >= from.saturating_add(self.policy.window_ms()) => {
                self.end_window(from, reads, now)
            }
            _ => {}
        }
        self.be_patient(now);
        Vec::new()
    }

    /// The window that began at `from` is over: its reads are due for a
    /// decision, and the next window follows at once.
    fn end_window(&mut self, from: u64, reads: u64, now: u64) {
        self.supersede();
        let due = self.due.get_or_insert_with(Due::default);
        due.reads = due.reads.saturating_add(reads - self.base);
        self.base = reads;
        let next = from.saturating_add(self.policy.window_ms());
        // Windows missed (a decision held up for longer than a window)
        // are not decided one after the other on nearly no reads.
        let missed = now >= next.saturating_add(self.policy.window_ms());
        self.window_from = Some(if missed { now } else { next });
    }

    fn decide_now(&mut self, reads: u64, ticket: u64) -> Vec<Effect> {
        if self.stopping {
            return vec![refuse(vec![ticket], "the scaler stopped")];
        }
        self.base = self.base.min(reads);
        self.supersede();
        let due = self.due.get_or_insert_with(Due::default);
        due.reads = due.reads.saturating_add(reads - self.base);
        due.tickets.push(ticket);
        self.base = reads;
        // The next window starts at the next read.
        self.window_from = None;
        Vec::new()
    }

    /// Gives up the starts left when slaves have been catching up for too
    /// long (more would only slow the master further).
    fn be_patient(&mut self, now: u64) {
        if let Some(plan) = self.plan.as_mut() {
            let waited = now.saturating_sub(plan.progress_at);
            if plan.starts_left > 0 && waited >= CATCH_UP_PATIENCE_MS {
                let secs = CATCH_UP_PATIENCE_MS / 1000;
                plan.drop_starts(&format!("slaves still catching up after {secs} s"));
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.starts_in_flight > 0 || self.retire_in_flight
    }

    /// Asks for a look at the cluster when a decision is due (once nothing
    /// is under way) or the plan can go on, one look at a time.
    fn pump(&mut self, eager: bool) -> Vec<Effect> {
        if self.stopping || self.observing {
            return Vec::new();
        }
        let look = match (&self.due, &self.plan) {
            (Some(_), _) => !self.in_flight(),
            (None, Some(p)) => {
                (p.starts_left > 0 && eager) || (p.stops_left > 0 && !self.retire_in_flight)
            }
            (None, None) => false,
        };
        if look {
            self.observing = true;
            return vec![Effect::Observe];
        }
        Vec::new()
    }

    fn looked(&mut self, view: &ClusterSnapshot, now: u64) -> Vec<Effect> {
        self.observing = false;
        if self.stopping {
            return Vec::new();
        }
        self.catching_up.retain(|id| {
            view.workers.iter().any(|w| {
                w.id == *id
                    && matches!(w.state, MemberState::Unregistered | MemberState::CatchingUp)
            })
        });
        if self.due.is_none() {
            return self.advance(view, now);
        }
        // A newer decision waits for what is under way (else it would count
        // a slave half started or half stopped); the plan it superseded
        // begins nothing more meanwhile.
        if self.in_flight() {
            return Vec::new();
        }
        let due = self.due.take().unwrap_or_default();
        let mut fx = self.settle();
        fx.extend(self.decide(due, view, now));
        fx
    }

    fn no_view(&mut self, error: &str) -> Vec<Effect> {
        self.observing = false;
        let mut fx = Vec::new();
        if let Some(due) = self.due.take() {
            fx.extend(no_decision(
                due,
                &format!("the cluster could not be seen: {error}"),
            ));
        }
        self.cut(&format!("the cluster could not be seen: {error}"));
        fx
    }

    /// A newer decision is due: the one under way begins nothing more (it
    /// ends once what it began has), and the newer does the rest.
    fn supersede(&mut self) {
        self.cut("a newer decision came");
    }

    /// The plan under way begins nothing more, for `why`.
    fn cut(&mut self, why: &str) {
        if let Some(plan) = self.plan.as_mut() {
            plan.drop_starts(why);
            plan.drop_stops(why);
        }
    }

    /// Makes the decision `due` calls for over the cluster `view`.
    fn decide(&mut self, due: Due, view: &ClusterSnapshot, now: u64) -> Vec<Effect> {
        let Some(master) = view.master else {
            return no_decision(due, "no master leads now");
        };
        let others = view.workers.iter().filter(|w| w.pid != master).count();
        // Replacements the watcher is starting count too (once).
        let from = others
            .saturating_add(view.starting_not_running())
            .saturating_add(self.starts_in_flight);
        let plan = Plan::new(&self.policy, due, from, now);
        let decision = plan.decision.clone();
        self.plan = Some(plan);
        let mut fx = vec![Effect::Announce(decision)];
        fx.extend(self.advance(view, now));
        fx
    }

    /// Carries the plan on over the cluster `view`: the next stop, or as
    /// many starts as the slaves catching up leave room for.
    fn advance(&mut self, view: &ClusterSnapshot, now: u64) -> Vec<Effect> {
        let catching = self.catching(view);
        let Some(plan) = self.plan.as_mut() else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        if plan.stops_left > 0 && !self.retire_in_flight {
            match (view.master, surplus_slave(view)) {
                (None, _) => plan.drop_stops("no master leads now"),
                (_, None) => plan.drop_stops("no slave left to stop"),
                (Some(_), Some(w)) => {
                    plan.stops_left -= 1;
                    self.retire_in_flight = true;
                    fx.push(Effect::Retire {
                        id: w.id,
                        pid: w.pid,
                    });
                }
            }
        }
        if plan.starts_left > 0 && view.master.is_none() {
            plan.drop_starts("no master leads now");
        }
        let room = CATCHING_UP_AT_ONCE.saturating_sub(catching);
        let starts = room.min(plan.starts_left);
        if starts > 0 {
            plan.starts_left -= starts;
            plan.progress_at = now;
            self.starts_in_flight += starts;
            fx.extend(std::iter::repeat_n(Effect::StartSlave, starts));
        }
        fx
    }

    /// Slaves taking a snapshot or about to: those started here that do
    /// not serve yet, any other catching up, the watcher's replacements,
    /// and starts under way.
    fn catching(&self, view: &ClusterSnapshot) -> usize {
        let others = view
            .workers
            .iter()
            .filter(|w| w.state == MemberState::CatchingUp && !self.catching_up.contains(&w.id))
            .count();
        [others, view.starting_not_running(), self.starts_in_flight]
            .into_iter()
            .fold(self.catching_up.len(), usize::saturating_add)
    }

    fn started(&mut self, id: Option<u64>, error: Option<String>, now: u64) -> Vec<Effect> {
        self.starts_in_flight = self.starts_in_flight.saturating_sub(1);
        if let (Some(id), None) = (id, &error) {
            self.catching_up.insert(id);
        }
        if let Some(plan) = self.plan.as_mut() {
            plan.started(id, error, now);
        }
        Vec::new()
    }

    fn retired(&mut self, id: u64, error: Option<String>) -> Vec<Effect> {
        self.retire_in_flight = false;
        if let Some(plan) = self.plan.as_mut() {
            plan.retired(id, error);
        }
        Vec::new()
    }

    fn refused(&mut self, id: u64) -> Vec<Effect> {
        self.retire_in_flight = false;
        if let Some(plan) = self.plan.as_mut() {
            plan.refused(id);
        }
        Vec::new()
    }

    /// Stops: decisions asked for are refused at once, the plan's starts
    /// and stops not yet begun are abandoned; those under way end first.
    fn stop(&mut self) -> Vec<Effect> {
        self.stopping = true;
        let mut fx = Vec::new();
        if let Some(due) = self.due.take().filter(|d| !d.tickets.is_empty()) {
            fx.push(refuse(due.tickets, "the scaler stopped"));
        }
        fx.extend(
            self.plan
                .as_mut()
                .and_then(|p| p.abandon("the scaler stopped")),
        );
        fx
    }

    /// Finishes the plan once nothing is left of it, and ends a stop once
    /// nothing is under way.
    fn settle(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        let done = self.plan.as_ref().is_some_and(Plan::begun) && !self.in_flight();
        if let Some(plan) = self.plan.take_if(|_| done) {
            let (decision, finished) = plan.finish();
            self.last = Some(decision);
            fx.extend(finished);
        }
        if self.stopping && !self.in_flight() && !self.stopped {
            self.stopped = true;
            fx.push(Effect::Stopped);
        }
        fx
    }
}
