//! Which orchestrator acts: the leadership state machine every
//! orchestrator's ElectionWatcher runs (`actors::watcher::lead` does the
//! I/O around it).
//!
//! Any number of orchestrators serve one cluster; the one whose session
//! holds the coordinator's ephemeral `/leader` leads. Leading is under a
//! lease, as a master's writes are: a round trip that finds `/leader`
//! still this session's extends the lease to `span` from the round
//! trip's start, where `span` is a safe part of the session timeout
//! (three fifths). A leader paused or cut off finds its lease run out
//! before its session can have expired, so before another can hold
//! `/leader`; it then carries out nothing, and steps down when it has a
//! decision to carry out (or a check says another holds `/leader`).
//!
//! A leader first brings the workers up (start-up); it *acts* (elects,
//! starts, kills, scales) only once they are up, and only while its lease
//! is valid: [`LeadCore::acting`]. The Scaler, on another thread, goes by
//! [`LeadCore::acting_until`].
//!
//! Workers that die with their orchestrator (child processes) must be
//! stopped by a leader that lives on once another orchestrator holds
//! `/leader`, so the new leader can start them over their stores
//! ([`Effect::ReleaseWorkers`]); its own session ending (a coordinator
//! restarted) is not enough: it keeps them, and takes the lead again once
//! its old session's node has gone, unless another did first.
//!
//! Time is milliseconds on the caller's clock, as everywhere in the core.

/// Who holds `/leader`, as its node says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub session: u64,
    pub pid: u64,
}

/// What the leadership learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A contention for `/leader` (create it if it is free, then read who
    /// holds it), begun at `asked`, found `holder`.
    Contended { asked: u64, holder: Option<Holder> },
    /// A check of `/leader`, begun at `asked`, found `holder`.
    Checked { asked: u64, holder: Option<Holder> },
    /// The workers are up: start-up is done.
    StartedUp,
    /// Start-up failed; `refused` if trying again cannot help.
    StartUpFailed { why: String, refused: bool },
    /// A coordinator session is open: `/leader` holding `session` is
    /// this orchestrator's from now on, and each check extends the lease
    /// by `span` (a safe part of this session's timeout).
    Connected { session: u64, span: u64 },
    /// The coordinator session ended.
    SessionEnded,
    /// The orchestrator is stopping: it does not take the lead again,
    /// but keeps what it leads until [`Input::Stop`].
    Retire,
    /// The orchestrator stops: no leading from now on.
    Stop,
}

/// What the leadership decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It leads from now on: bring the workers up (then
    /// [`Input::StartedUp`] or [`Input::StartUpFailed`]).
    StartUp,
    /// Try start-up again a little later (if it still leads and has not
    /// started up by then).
    StartUpLater,
    /// It no longer leads, for the reason given: what it had under way as
    /// leader (a start-up) is dropped.
    StepDown(String),
    /// Another orchestrator holds `/leader`: workers that die with this
    /// one are stopped, for the new leader to start over their stores.
    ReleaseWorkers,
}

/// One orchestrator's leadership.
#[derive(Clone, Debug)]
pub struct LeadCore {
    /// Its current coordinator session (0: none), and its process.
    session: u64,
    pid: u64,
    /// How far a round trip that finds `/leader` its own extends the lease.
    span: u64,
    leading: bool,
    ready: bool,
    /// The lease runs to here (exclusive); `None`: no lease.
    lease: Option<u64>,
    stopped: bool,
    /// Why the last start-up was refused.
    refused: Option<String>,
}

impl LeadCore {
    /// The leadership of process `pid`; it has no session (and so never
    /// leads) until [`Input::Connected`].
    pub fn new(pid: u64) -> Self {
        LeadCore {
            session: 0,
            pid,
            span: 0,
            leading: false,
            ready: false,
            lease: None,
            stopped: false,
            refused: None,
        }
    }

    /// It holds `/leader` (as far as it knows).
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// It leads with its workers up.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// It stopped: it never leads again.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether it may contend for `/leader` now.
    pub fn may_contend(&self) -> bool {
        !self.stopped && !self.leading
    }

    /// Whether what it decides is carried out at `now`: it leads, its
    /// workers are up and its lease is valid.
    pub fn acting(&self, now: u64) -> bool {
        self.acting_until().is_some_and(|t| now < t)
    }

    /// Until when (exclusive) it acts, unless it learns otherwise first.
    pub fn acting_until(&self) -> Option<u64> {
        self.lease.filter(|_| self.leading && self.ready)
    }

    /// Why the last start-up was refused.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// A decision is to be carried out at `now`: if it cannot be (the
    /// lease ran out while it led with its workers up: paused, cut off),
    /// it steps down and looks again at who leads.
    pub fn decide(&mut self, now: u64) -> (bool, Vec<Effect>) {
        if self.acting(now) {
            return (true, Vec::new());
        }
        if self.leading && self.ready {
            return (false, self.step_down("its lease ran out"));
        }
        (false, Vec::new())
    }

    pub fn on(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Contended { asked, holder } => self.contended(asked, holder),
            Input::Checked { asked, holder } => self.checked(asked, holder),
            Input::StartedUp => {
                if self.leading {
                    self.ready = true;
                    self.refused = None;
                }
                Vec::new()
            }
            Input::StartUpFailed { why, refused } => {
                if !self.leading {
                    return Vec::new();
                }
                self.refused = refused.then_some(why);
                vec![Effect::StartUpLater]
            }
            Input::Connected { session, span } => {
                self.session = session;
                self.span = span;
                Vec::new()
            }
            Input::SessionEnded => self.step_down("its coordinator session ended"),
            Input::Retire => {
                self.stopped = true;
                Vec::new()
            }
            Input::Stop => {
                self.stopped = true;
                self.step_down("it stops")
            }
        }
    }

    fn contended(&mut self, asked: u64, holder: Option<Holder>) -> Vec<Effect> {
        match holder {
            Some(h) if h.session == self.session && self.session != 0 && !self.stopped => {
                self.extend(asked);
                if self.leading {
                    return Vec::new();
                }
                self.leading = true;
                self.ready = false;
                vec![Effect::StartUp]
            }
            // Another orchestrator leads.
            Some(h) if h.pid != self.pid => vec![Effect::ReleaseWorkers],
            // Nobody (it may contend again), this session stopped, or this
            // process's own ended session (its node goes when that
            // session expires).
            _ => Vec::new(),
        }
    }

    fn checked(&mut self, asked: u64, holder: Option<Holder>) -> Vec<Effect> {
        if !self.leading {
            return Vec::new();
        }
        match holder {
            Some(h) if h.session == self.session => {
                self.extend(asked);
                Vec::new()
            }
            Some(_) => {
                let mut effects = self.step_down("another orchestrator holds /leader");
                effects.push(Effect::ReleaseWorkers);
                effects
            }
            None => self.step_down("/leader went"),
        }
    }

    fn extend(&mut self, asked: u64) {
        let until = asked.saturating_add(self.span);
        self.lease = Some(self.lease.map_or(until, |t| t.max(until)));
    }

    fn step_down(&mut self, why: &str) -> Vec<Effect> {
        self.lease = None;
        if !self.leading {
            return Vec::new();
        }
        self.leading = false;
        self.ready = false;
        vec![Effect::StepDown(why.to_owned())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Holder = Holder { session: 7, pid: 1 };
    const OTHER: Holder = Holder { session: 9, pid: 2 };

    fn leader_at(asked: u64) -> LeadCore {
        let mut l = LeadCore::new(ME.pid);
        l.on(Input::Connected {
            session: ME.session,
            span: 600,
        });
        let holder = Some(ME);
        assert_eq!(l.on(Input::Contended { asked, holder }), [Effect::StartUp]);
        l
    }

    #[test]
    fn it_acts_only_once_its_workers_are_up_and_while_its_lease_lasts() {
        let mut l = leader_at(100);
        assert!(l.leading() && !l.acting(100), "not before start-up");
        assert_eq!(l.decide(150), (false, vec![]), "starting up: no step-down");
        l.on(Input::StartedUp);
        assert!(l.acting(699) && !l.acting(700));
        assert_eq!(l.acting_until(), Some(700));
        // A check begun at 500 that finds it holding /leader extends it.
        let holder = Some(ME);
        assert!(l.on(Input::Checked { asked: 500, holder }).is_empty());
        assert!(l.acting(1099));
        // An older check's answer arriving late shortens nothing.
        assert!(l.on(Input::Checked { asked: 200, holder }).is_empty());
        assert_eq!(l.acting_until(), Some(1100));
    }

    #[test]
    fn a_decision_past_the_lease_steps_it_down() {
        let mut l = leader_at(0);
        l.on(Input::StartedUp);
        assert_eq!(l.decide(599), (true, vec![]));
        let (act, effects) = l.decide(600);
        assert!(!act);
        assert_eq!(effects, [Effect::StepDown("its lease ran out".into())]);
        assert!(!l.leading() && l.may_contend());
        // A check answered after that does not make it lead again.
        let holder = Some(ME);
        assert!(l.on(Input::Checked { asked: 650, holder }).is_empty());
        assert!(!l.leading() && l.acting_until().is_none());
    }

    #[test]
    fn another_holding_leader_steps_it_down_and_releases_its_workers() {
        let mut l = leader_at(0);
        l.on(Input::StartedUp);
        let holder = Some(OTHER);
        assert_eq!(
            l.on(Input::Checked { asked: 10, holder }),
            [
                Effect::StepDown("another orchestrator holds /leader".into()),
                Effect::ReleaseWorkers
            ]
        );
        // Contending finds the other still there: its workers go again
        // (a no-op when none run).
        assert_eq!(
            l.on(Input::Contended { asked: 20, holder }),
            [Effect::ReleaseWorkers]
        );
    }

    #[test]
    fn its_own_ended_session_keeps_the_workers_and_waits_for_the_old_node() {
        let mut l = leader_at(0);
        l.on(Input::StartedUp);
        let effects = l.on(Input::SessionEnded);
        assert_eq!(
            effects,
            [Effect::StepDown("its coordinator session ended".into())]
        );
        l.on(Input::Connected {
            session: 8,
            span: 600,
        });
        // /leader still holds its old session's node: nothing to release.
        let holder = Some(ME);
        assert!(l.on(Input::Contended { asked: 30, holder }).is_empty());
        assert!(!l.leading());
        // Once it is gone, the new session takes the lead.
        let holder = Some(Holder { session: 8, pid: 1 });
        assert_eq!(
            l.on(Input::Contended { asked: 40, holder }),
            [Effect::StartUp]
        );
    }

    #[test]
    fn a_start_up_tried_again_keeps_only_a_refusal() {
        let mut l = leader_at(0);
        let why = "no stores".to_owned();
        let failed = Input::StartUpFailed {
            why,
            refused: false,
        };
        assert_eq!(l.on(failed), [Effect::StartUpLater]);
        assert_eq!(l.refused(), None);
        let why = "empty directory with a history".to_owned();
        let refused = Input::StartUpFailed { why, refused: true };
        assert_eq!(l.on(refused), [Effect::StartUpLater]);
        assert!(l.refused().is_some());
        l.on(Input::StartedUp);
        assert_eq!(l.refused(), None);
    }

    #[test]
    fn a_stopped_one_never_leads_again() {
        let mut l = leader_at(0);
        l.on(Input::StartedUp);
        // Retiring keeps what it leads, until it stops.
        assert!(l.on(Input::Retire).is_empty());
        assert!(l.acting(10) && !l.may_contend());
        assert_eq!(l.on(Input::Stop), [Effect::StepDown("it stops".into())]);
        assert!(!l.may_contend());
        let holder = Some(ME);
        assert!(l.on(Input::Contended { asked: 5, holder }).is_empty());
        assert!(!l.leading());
    }

    #[test]
    fn a_free_leader_node_decides_nothing_until_it_is_taken() {
        let mut l = LeadCore::new(ME.pid);
        l.on(Input::Connected {
            session: ME.session,
            span: 600,
        });
        let holder = None;
        assert!(l.on(Input::Contended { asked: 0, holder }).is_empty());
        assert!(l.may_contend() && !l.leading());
        assert!(l.on(Input::Checked { asked: 0, holder }).is_empty());
    }
}
