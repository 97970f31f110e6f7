//! Several orchestrators contending for the lead: the production
//! leadership state machine ([`dbaas::core::lead`]) of each, driven as
//! `actors::watcher::lead` drives it, against a simulated ZooKeeper
//! (sessions that expire a timeout after the server last heard from their
//! client, an ephemeral `/leader`, FIFO round trips of random latency) on
//! a virtual clock, under kills, pauses (SIGSTOP past the lease and past
//! the session) and slow round trips.
//!
//! The checker holds the promise that makes one orchestrator's decisions
//! safe: whenever an orchestrator carries out a decision (its watcher's
//! or its Scaler's), `/leader` holds its session at that moment, so no two
//! orchestrators ever act at once, however late a paused one resumes or
//! a check's answer arrives. Once faults stop, some orchestrator acts
//! again within a bound (a way forward).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use dbaas::core::lead::{Effect, Holder, Input, LeadCore};

/// The session timeout, in milliseconds (the tests' 600 ms).
const TIMEOUT: u64 = 600;
/// How often the leader checks `/leader` (`lead::RENEW_EVERY`).
const RENEW: u64 = 100;
/// How often every orchestrator looks around (and contends).
const LOOK: u64 = 1_000;
/// How often a client pings its server (a third of the timeout).
const PING: u64 = TIMEOUT / 3;
/// How often the server looks for expired sessions (its tick).
const SERVER_TICK: u64 = 10;

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Setup {
    pub orchestrators: usize,
    /// How long faults come (ms); then a quiet spell.
    pub faulty_for: u64,
    /// A bug to plant: the lease counted from when a check's answer
    /// arrived rather than from when it was sent (a late answer then
    /// stretches it past the session).
    pub extend_from_answer: bool,
    /// A bug to plant: a decision judged by the time it was due, not by
    /// the time it is carried out (a paused leader's held decisions then
    /// look as if its lease were valid).
    pub decide_when_due: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            orchestrators: 3,
            faulty_for: 20_000,
            extend_from_answer: false,
            decide_when_due: false,
        }
    }
}

/// What happens next.
#[derive(Clone, Debug)]
enum Ev {
    /// The server drops sessions not heard from for the timeout.
    ServerTick,
    /// A message reaches the server from orchestrator `o`'s session `s`.
    AtServer { o: usize, s: u64, op: Op },
    /// Something reaches orchestrator `o` (`life`: which of its lives).
    AtOrch { o: usize, life: u64, what: What },
    /// A fault begins.
    Fault,
    /// Orchestrator `o` starts again, as a new process.
    Restart { o: usize },
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Ping,
    /// A check of `/leader`, sent at `asked`.
    Check {
        asked: u64,
    },
    /// A contention, sent at `asked`.
    Contend {
        asked: u64,
    },
    /// Open a new session.
    Open,
}

#[derive(Clone, Debug)]
enum What {
    PingTick,
    RenewTick,
    LookTick,
    /// The watcher or the Scaler has a decision to carry out (it came up
    /// at `due`).
    Decide {
        scaler: bool,
        due: u64,
    },
    StartedUp,
    Checked {
        asked: u64,
        holder: Option<Holder>,
    },
    Contended {
        asked: u64,
        holder: Option<Holder>,
    },
    /// The server says its session ended.
    Expired,
    Opened {
        session: u64,
    },
    /// `/leader` was deleted (a watch).
    LeaderGone,
    /// Resumed from a pause.
    Resume,
}

struct Orch {
    pid: u64,
    life: u64,
    alive: bool,
    paused_until: Option<u64>,
    /// What reached it while paused, in order.
    held: Vec<What>,
    session: Option<u64>,
    core: LeadCore,
    /// When its last message to the server and from it arrive (FIFO).
    up_fifo: u64,
    down_fifo: u64,
}

struct Session {
    owner: usize,
    heard: u64,
    alive: bool,
}

struct Sim {
    setup: Setup,
    now: u64,
    rng: fastrand::Rng,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    seq: u64,
    orchs: Vec<Orch>,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    next_pid: u64,
    leader: Option<(u64, u64)>,
    trace: Vec<String>,
    acts: u64,
    last_act: u64,
}

/// What a run found: how many decisions were carried out.
pub type Outcome = Result<u64, String>;

/// Runs seed `seed` under `setup`.
pub fn run(seed: u64, setup: Setup) -> Outcome {
    let mut sim = Sim::new(seed, setup);
    sim.go()
}

impl Sim {
    fn new(seed: u64, setup: Setup) -> Self {
        let mut sim = Sim {
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            seq: 0,
            orchs: Vec::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            next_pid: 100,
            leader: None,
            trace: Vec::new(),
            acts: 0,
            last_act: 0,
            setup,
        };
        for o in 0..sim.setup.orchestrators {
            let orch = sim.fresh_orch();
            sim.orchs.push(orch);
            sim.boot(o);
        }
        sim.at(0, Ev::ServerTick);
        let first = sim.rng.u64(0..2_000);
        sim.at(first, Ev::Fault);
        sim
    }

    fn fresh_orch(&mut self) -> Orch {
        self.next_pid += 1;
        Orch {
            pid: self.next_pid,
            life: 0,
            alive: true,
            paused_until: None,
            held: Vec::new(),
            session: None,
            core: LeadCore::new(self.next_pid),
            up_fifo: 0,
            down_fifo: 0,
        }
    }

    /// A new life of orchestrator `o`: it opens a session and starts
    /// its timers.
    fn boot(&mut self, o: usize) {
        let life = self.orchs[o].life;
        self.send(o, 0, Op::Open);
        for (what, first) in [
            (What::PingTick, PING),
            (What::RenewTick, RENEW),
            (What::LookTick, self.rng.u64(0..LOOK)),
            (
                What::Decide {
                    scaler: false,
                    due: 0,
                },
                self.rng.u64(1..200),
            ),
            (
                What::Decide {
                    scaler: true,
                    due: 0,
                },
                self.rng.u64(1..200),
            ),
        ] {
            let what = match what {
                What::Decide { scaler, .. } => What::Decide {
                    scaler,
                    due: self.now + first,
                },
                w => w,
            };
            self.at(self.now + first, Ev::AtOrch { o, life, what });
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((t, self.seq, self.events.len() - 1)));
    }

    /// A round trip's one way: mostly quick, now and then slow.
    fn latency(&mut self) -> u64 {
        if self.rng.u8(..) < 8 {
            self.rng.u64(50..400)
        } else {
            self.rng.u64(0..20)
        }
    }

    fn send(&mut self, o: usize, s: u64, op: Op) {
        let t = (self.now + self.latency()).max(self.orchs[o].up_fifo);
        self.orchs[o].up_fifo = t;
        self.at(t, Ev::AtServer { o, s, op });
    }

    fn reply(&mut self, o: usize, what: What) {
        let t = (self.now + self.latency()).max(self.orchs[o].down_fifo);
        self.orchs[o].down_fifo = t;
        let life = self.orchs[o].life;
        self.at(t, Ev::AtOrch { o, life, what });
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{:>6} {line}", self.now));
    }

    fn go(&mut self) -> Outcome {
        let end = self.setup.faulty_for + 10 * TIMEOUT + 3 * LOOK;
        while let Some(Reverse((t, _, i))) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            let ev = self.events[i].take().expect("each event once");
            self.handle(ev)?;
        }
        // A way forward: once faults stop, someone acts again.
        let quiet = self.setup.faulty_for + 2 * TIMEOUT;
        if self.last_act < quiet {
            return Err(self.failure(&format!(
                "nobody acted after the faults stopped (last at {})",
                self.last_act
            )));
        }
        Ok(self.acts)
    }

    fn failure(&self, why: &str) -> String {
        let tail = self.trace.len().saturating_sub(60);
        format!("{why}\n{}", self.trace[tail..].join("\n"))
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::ServerTick => {
                self.expire();
                self.at(self.now + SERVER_TICK, Ev::ServerTick);
            }
            Ev::AtServer { o, s, op } => self.at_server(o, s, op),
            Ev::AtOrch { o, life, what } => {
                let orch = &mut self.orchs[o];
                if !orch.alive || orch.life != life {
                    return Ok(());
                }
                if orch.paused_until.is_some() && !matches!(what, What::Resume) {
                    orch.held.push(what);
                    return Ok(());
                }
                if matches!(what, What::Resume) {
                    orch.paused_until = None;
                    let held = std::mem::take(&mut orch.held);
                    self.log(format!("orchestrator {o} resumes ({} held)", held.len()));
                    for w in held {
                        self.at_orch(o, w)?;
                    }
                    return Ok(());
                }
                self.at_orch(o, what)?;
            }
            Ev::Restart { o } => {
                let life = self.orchs[o].life + 1;
                self.orchs[o] = self.fresh_orch();
                self.orchs[o].life = life;
                self.log(format!(
                    "orchestrator {o} starts again, pid {}",
                    self.orchs[o].pid
                ));
                self.boot(o);
            }
            Ev::Fault => {
                if self.now < self.setup.faulty_for {
                    self.fault();
                    let next = self.now + self.rng.u64(200..3_000);
                    self.at(next, Ev::Fault);
                }
            }
        }
        Ok(())
    }

    fn expire(&mut self) {
        let now = self.now;
        let gone: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.alive && now.saturating_sub(s.heard) > TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.close_session(id, "expires");
        }
    }

    fn close_session(&mut self, id: u64, how: &str) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.alive {
            return;
        }
        s.alive = false;
        self.log(format!("session {id} {how}"));
        if self.leader.is_some_and(|(l, _)| l == id) {
            self.leader = None;
            self.log("/leader goes".into());
            for o in 0..self.orchs.len() {
                if let Some(sid) = self.orchs[o].session {
                    if self.sessions.get(&sid).is_some_and(|s| s.alive) {
                        self.reply(o, What::LeaderGone);
                    }
                }
            }
        }
    }

    fn holder(&self) -> Option<Holder> {
        self.leader.map(|(session, pid)| Holder { session, pid })
    }

    fn at_server(&mut self, o: usize, s: u64, op: Op) {
        if let Op::Open = op {
            let id = self.next_session;
            self.next_session += 1;
            let heard = self.now;
            self.sessions.insert(
                id,
                Session {
                    owner: o,
                    heard,
                    alive: true,
                },
            );
            self.reply(o, What::Opened { session: id });
            return;
        }
        let live = self.sessions.get_mut(&s).filter(|x| x.alive);
        let Some(session) = live else {
            self.reply(o, What::Expired);
            return;
        };
        session.heard = self.now;
        let owner = session.owner;
        debug_assert_eq!(owner, o);
        match op {
            Op::Ping | Op::Open => {}
            Op::Check { asked } => {
                let holder = self.holder();
                self.reply(o, What::Checked { asked, holder });
            }
            Op::Contend { asked } => {
                if self.leader.is_none() {
                    self.leader = Some((s, self.orchs[o].pid));
                    self.log(format!("/leader taken by session {s} (orchestrator {o})"));
                }
                let holder = self.holder();
                self.reply(o, What::Contended { asked, holder });
            }
        }
    }

    fn at_orch(&mut self, o: usize, what: What) -> Result<(), String> {
        let life = self.orchs[o].life;
        let session = self.orchs[o].session;
        match what {
            What::PingTick => {
                if let Some(s) = session {
                    self.send(o, s, Op::Ping);
                }
                self.at(
                    self.now + PING,
                    Ev::AtOrch {
                        o,
                        life,
                        what: What::PingTick,
                    },
                );
            }
            What::RenewTick => {
                if let (Some(s), true) = (session, self.orchs[o].core.leading()) {
                    let asked = self.now;
                    self.send(o, s, Op::Check { asked });
                }
                self.at(
                    self.now + RENEW,
                    Ev::AtOrch {
                        o,
                        life,
                        what: What::RenewTick,
                    },
                );
            }
            What::LookTick | What::LeaderGone => {
                if matches!(what, What::LookTick) {
                    self.at(
                        self.now + LOOK,
                        Ev::AtOrch {
                            o,
                            life,
                            what: What::LookTick,
                        },
                    );
                }
                if let (Some(s), true) = (session, self.orchs[o].core.may_contend()) {
                    let asked = self.now;
                    self.send(o, s, Op::Contend { asked });
                }
            }
            What::Decide { scaler, due } => {
                let at = if self.setup.decide_when_due {
                    due
                } else {
                    self.now
                };
                let acting = if scaler {
                    // The Scaler, on its thread, goes by the acting lease.
                    self.orchs[o].core.acting(at)
                } else {
                    let (acting, effects) = self.orchs[o].core.decide(at);
                    self.effects(o, effects);
                    acting
                };
                if acting {
                    self.acted(o, scaler)?;
                }
                let due = self.now + self.rng.u64(1..200);
                let what = What::Decide { scaler, due };
                self.at(due, Ev::AtOrch { o, life, what });
            }
            What::StartedUp => {
                let e = self.orchs[o].core.on(Input::StartedUp);
                self.effects(o, e);
            }
            What::Checked { asked, holder } => {
                let asked = if self.setup.extend_from_answer {
                    self.now
                } else {
                    asked
                };
                let e = self.orchs[o].core.on(Input::Checked { asked, holder });
                self.effects(o, e);
            }
            What::Contended { asked, holder } => {
                let e = self.orchs[o].core.on(Input::Contended { asked, holder });
                self.effects(o, e);
            }
            What::Expired => {
                if session.is_some() {
                    self.log(format!("orchestrator {o} learns its session ended"));
                    self.orchs[o].session = None;
                    let e = self.orchs[o].core.on(Input::SessionEnded);
                    self.effects(o, e);
                    self.send(o, 0, Op::Open);
                }
            }
            What::Opened { session } => {
                self.orchs[o].session = Some(session);
                let span =
                    dbaas::actors::lease::lease_span(std::time::Duration::from_millis(TIMEOUT));
                let span = span.as_millis() as u64;
                let e = self.orchs[o].core.on(Input::Connected { session, span });
                self.effects(o, e);
                let asked = self.now;
                self.send(o, session, Op::Contend { asked });
            }
            What::Resume => {}
        }
        Ok(())
    }

    fn effects(&mut self, o: usize, effects: Vec<Effect>) {
        for e in effects {
            self.log(format!("orchestrator {o}: {e:?}"));
            if let Effect::StartUp = e {
                // Bringing the workers up takes a while.
                let took = self.rng.u64(0..300);
                let life = self.orchs[o].life;
                self.at(
                    self.now + took,
                    Ev::AtOrch {
                        o,
                        life,
                        what: What::StartedUp,
                    },
                );
            }
        }
    }

    /// Orchestrator `o` carries out a decision now: `/leader` must hold
    /// its live session.
    fn acted(&mut self, o: usize, scaler: bool) -> Result<(), String> {
        self.acts += 1;
        self.last_act = self.now;
        let mine = self.orchs[o].session;
        let ok = mine.is_some() && self.leader.map(|(s, _)| s) == mine;
        if !ok {
            let who = if scaler { "Scaler" } else { "watcher" };
            self.log(format!(
                "orchestrator {o}'s {who} acts; /leader: {:?}",
                self.leader
            ));
            return Err(self.failure(&format!(
                "orchestrator {o} ({who}) acted while /leader was {:?}, not its session {mine:?}",
                self.leader
            )));
        }
        Ok(())
    }

    fn fault(&mut self) {
        let o = self.rng.usize(..self.orchs.len());
        let live = self.orchs[o].alive && self.orchs[o].paused_until.is_none();
        if !live {
            return;
        }
        match self.rng.u8(0..10) {
            // SIGKILL; a new process on its address a while later.
            0..=2 => {
                self.log(format!("kill orchestrator {o}"));
                self.orchs[o].alive = false;
                let back = self.now + self.rng.u64(100..2_000);
                self.at(back, Ev::Restart { o });
            }
            // SIGSTOP around the lease's edge or past the session.
            3..=7 => {
                let pause = self.rng.u64(100..2 * TIMEOUT);
                self.log(format!("pause orchestrator {o} for {pause}"));
                self.orchs[o].paused_until = Some(self.now + pause);
                let life = self.orchs[o].life;
                self.at(
                    self.now + pause,
                    Ev::AtOrch {
                        o,
                        life,
                        what: What::Resume,
                    },
                );
            }
            // A clean stop (its session closed at once), then a restart.
            _ => {
                self.log(format!("stop orchestrator {o}"));
                let e = self.orchs[o].core.on(Input::Stop);
                self.effects(o, e);
                if let Some(s) = self.orchs[o].session {
                    self.close_session(s, "closed");
                }
                self.orchs[o].alive = false;
                let back = self.now + self.rng.u64(100..2_000);
                self.at(back, Ev::Restart { o });
            }
        }
    }
}
