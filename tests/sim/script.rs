//! Named scenarios as scripts, one command a line:
//!
//! ```text
//! setup slaves=2 cap=64 flush=0.05 refuse=0 respawn=40 session=30 hung=100
//!                   (and `mutate=requeue-on-failed-publish`: the
//!                   master's pipeline before failed publishes were sent
//!                   again by their own group; `orchestrator=zero-head`:
//!                   the orchestrator before it asked for the head;
//!                   `orchestrator=early-answers`: it hands over a
//!                   strong read's answer without checking the seq it
//!                   was read at against the head)
//! write 30          clients write 30 times (one in eleven breaks the
//!                   schema); run until all are answered
//! send 6            clients write 6 times; go on at once
//! crash master      kill the worker /master names (a death seen at once)
//! lose master       the same, and its disk is lost with it (it starts
//!                   again over an empty store)
//! kill slaves       kill every live worker that does not lead
//! kill promotee     kill the worker that drains to lead
//! kill worker 3     kill worker 3
//! pause master 500  pause the master 500 ms (SIGSTOP, then SIGCONT)
//! pause worker 2 50 pause worker 2 50 ms
//! pause slaves 50   pause every worker that does not lead 50 ms
//! restart broker    every consumer's channel dies, publishes under way fail
//! expire queue 2    worker 2's sync queue is deleted and comes back empty
//! lose next sync 2  the next sync to worker 2's queue is confirmed, then
//!                   lost (with no write after it, no later sync shows it)
//! expire slaves queues  the same for every worker that does not lead
//! restart orchestrator  a new one, which knows nothing acknowledged yet
//! strong reads 5    clients send 5 strong reads (each checked when its
//!                   answer is handed over)
//! coordinator away 200  no lease, no session expiry, no watcher for 200 ms
//! until promoting   run until an elected worker drains
//! until leading     run until a master leads
//! until answered 7  run until the master has answered write 7 (a
//!                   restore is acknowledged to its client only later)
//! step 100          run 100 ms
//! scale on          the Scaler runs (a 300 ms window, 20 reads a slave,
//!                   at most 4 slaves, 2 a decision)
//! decide            the Scaler decides now, on the reads so far
//! until started unheard  run until a worker the watcher started runs,
//!                   before the watcher hears its start is done
//! kill unheard      kill that worker
//! reads 200         clients read 200 times
//! settle            stop faults, run until quiet, check every promise
//! expect some words an event so far says these words
//! expect no some words  no event so far says these words
//! ```
//!
//! `setup` also takes `log=64`: how many writes a master's log keeps for
//! catch-ups, `windows=2,2`: how many batches of reads and of writes
//! the orchestrator may have unanswered, `restores=true`: one valid
//! write in thirteen is a restore (writes 7, 20, 33, ...),
//! `orchestrator=read-index`: strong reads' answers wait for a head asked
//! after they began, and must see every write a master answered before they
//! began (as with other orchestrators beside this one), and
//! `check=every-answer`: that check alone.

use dbaas::core::election::Succession;
use dbaas::core::pipeline::Mutation;

use super::check;
use super::nemesis::{kill_slaves, trace};
use super::world::{Role, Setup, World};

/// How long an `until` or a `write` may run.
const WITHIN: u64 = 10_000;

/// Runs `script`; an error names the broken promise or the stuck step,
/// with the trace.
pub fn run(script: &str, rule: Succession) -> Result<(), String> {
    let mut w: Option<World> = None;
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "setup" {
            w = Some(World::new(1, parse_setup(&words[1..])?, rule.clone()));
            continue;
        }
        let world = w.get_or_insert_with(|| World::new(1, Setup::default(), rule.clone()));
        world.log(format!("> {line}"));
        command(world, &words).map_err(|e| format!("{line}: {e}\n{}", trace(world)))?;
    }
    Ok(())
}

fn command(w: &mut World, words: &[&str]) -> Result<(), String> {
    let arg = |i: usize| -> Result<u64, String> {
        words
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "a number is missing".to_string())
    };
    match words {
        ["write", _] => {
            // Answered: acknowledged, or refused (one in eleven breaks the
            // schema).
            let answered = |w: &World| (w.acked.len() + w.refused.len()) as u64;
            let target = answered(w) + arg(1)?;
            for _ in 0..arg(1)? {
                w.client_write();
            }
            until(w, |w| answered(w) >= target)
        }
        ["send", _] => {
            for _ in 0..arg(1)? {
                w.client_write();
            }
            Ok(())
        }
        ["crash", "master"] => {
            let id = w.named().map(|m| m.id).ok_or("no master")?;
            w.kill(id);
            Ok(())
        }
        ["lose", "master"] => {
            let id = w.named().map(|m| m.id).ok_or("no master")?;
            w.lose(id);
            Ok(())
        }
        ["kill", "promotee"] => {
            let id = w
                .workers
                .values()
                .find(|x| x.alive && matches!(x.role, Role::Promoting { .. }))
                .map(|x| x.id)
                .ok_or("no promotee")?;
            w.kill(id);
            Ok(())
        }
        ["kill", "slaves"] => {
            kill_slaves(w);
            Ok(())
        }
        ["kill", "worker", _] => {
            w.kill(arg(2)?);
            Ok(())
        }
        ["restart", "orchestrator"] => {
            w.restart_orchestrator();
            Ok(())
        }
        ["strong", "reads", _] => {
            for _ in 0..arg(2)? {
                w.strong_read();
            }
            Ok(())
        }
        ["lose", "next", "sync", _] => {
            let id = arg(3)?;
            let q = w.queues.get_mut(&id).ok_or("no such sync queue")?;
            q.lose_next = true;
            Ok(())
        }
        ["expire", "queue", _] => {
            w.expire_sync_queue(arg(2)?);
            Ok(())
        }
        ["expire", "slaves", "queues"] => {
            for id in w.slaves() {
                w.expire_sync_queue(id);
            }
            Ok(())
        }
        ["restart", "broker"] => {
            w.broker_restart();
            Ok(())
        }
        ["coordinator", "away", _] => {
            w.coordinator_outage(arg(2)?);
            Ok(())
        }
        ["pause", "master", _] => {
            let id = w.named().map(|m| m.id).ok_or("no master")?;
            w.pause(id, arg(2)?);
            Ok(())
        }
        ["pause", "slaves", _] => {
            for id in w.slaves() {
                w.pause(id, arg(2)?);
            }
            Ok(())
        }
        ["pause", "worker", _, _] => {
            w.pause(arg(2)?, arg(3)?);
            Ok(())
        }
        ["until", "promoting"] => until(w, |w| {
            w.workers
                .values()
                .any(|x| x.alive && matches!(x.role, Role::Promoting { .. }))
        }),
        ["until", "answered", _] => {
            let write = arg(2)?;
            until(w, |w| {
                w.restores_answered.contains(&write) || w.acked.contains(&write)
            })
        }
        ["until", "leading"] => until(w, |w| w.leader().is_some()),
        ["step", _] => {
            for _ in 0..arg(1)? {
                w.step();
            }
            Ok(())
        }
        ["scale", "on"] => {
            w.with_scaler(super::scale::policy());
            Ok(())
        }
        ["decide"] => {
            w.decide_now();
            Ok(())
        }
        ["until", "started", "unheard"] => until(w, |w| w.started_unheard().is_some()),
        ["kill", "unheard"] => {
            let id = w.started_unheard().ok_or("no worker runs unheard")?;
            w.kill(id);
            Ok(())
        }
        ["reads", _] => {
            w.reads += arg(1)?;
            Ok(())
        }
        ["settle"] => check::settle(w),
        ["expect", "no", phrase @ ..] => {
            let phrase = phrase.join(" ");
            let seen = w
                .trace
                .iter()
                .any(|e| !e.what.starts_with("> ") && e.what.contains(&phrase));
            (!seen)
                .then_some(())
                .ok_or_else(|| format!("an event says {phrase:?}"))
        }
        ["expect", phrase @ ..] => {
            let phrase = phrase.join(" ");
            // Not the script's own lines, which the trace holds too.
            let seen = w
                .trace
                .iter()
                .any(|e| !e.what.starts_with("> ") && e.what.contains(&phrase));
            seen.then_some(())
                .ok_or_else(|| format!("no event says {phrase:?}"))
        }
        _ => Err("unknown command".into()),
    }
}

fn until(w: &mut World, done: impl Fn(&World) -> bool) -> Result<(), String> {
    let from = w.now;
    while !done(w) {
        if w.now - from > WITHIN {
            return Err(format!("not reached within {WITHIN} ms"));
        }
        w.step();
    }
    Ok(())
}

fn parse_setup(words: &[&str]) -> Result<Setup, String> {
    let mut s = Setup::default();
    for word in words {
        let (k, v) = word.split_once('=').ok_or("setup takes key=value")?;
        let bad = || format!("bad value for {k}");
        match k {
            "slaves" => s.slaves = v.parse().map_err(|_| bad())?,
            "cap" => s.queue_cap = v.parse().map_err(|_| bad())?,
            "flush" => s.flush_chance = v.parse().map_err(|_| bad())?,
            "refuse" => s.refuse_chance = v.parse().map_err(|_| bad())?,
            "respawn" => s.respawn_after = (1, v.parse().map_err(|_| bad())?),
            "session" => s.session_ms = v.parse().map_err(|_| bad())?,
            "hung" => s.hung_after = v.parse().map_err(|_| bad())?,
            "log" => s.log_writes = v.parse().map_err(|_| bad())?,
            "restores" => s.restores = v.parse().map_err(|_| bad())?,
            "windows" => {
                let (r, w) = v.split_once(',').ok_or_else(bad)?;
                s.windows = (r.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
            }
            "mutate" => {
                s.pipeline_mutation = Some(match v {
                    "requeue-on-failed-publish" => Mutation::RequeueOnFailedPublish,
                    _ => return Err(bad()),
                })
            }
            "orchestrator" if v == "zero-head" => s.zero_head = true,
            "orchestrator" if v == "early-answers" => s.early_answers = true,
            "leader" if v == "forgets-succession" => s.forget_succession = true,
            "orchestrator" if v == "read-index" => {
                s.read_index = true;
                s.reads_see_every_answer = true;
            }
            "check" if v == "every-answer" => s.reads_see_every_answer = true,
            "replica" if v == "trust-resubscribe" => {
                s.replica_mutation = Some(dbaas::core::replica::Mutation::TrustResubscribe)
            }
            "replica" if v == "forget-awaited" => {
                s.replica_mutation = Some(dbaas::core::replica::Mutation::ForgetAwaited)
            }
            _ => return Err(format!("unknown setting {k}")),
        }
    }
    Ok(s)
}
