//! Table tests of the election rule.

use super::*;

fn c(id: u64, pid: u64, applied_seq: u64) -> Candidate {
    Candidate {
        id,
        pid,
        applied_seq,
        last_epoch: 1,
    }
}

#[test]
fn the_most_advanced_leads_ties_to_the_lowest_pid() {
    let cases: &[(&[Candidate], Option<u64>)] = &[
        (&[], None),
        (&[c(1, 10, 0)], Some(1)),
        (&[c(1, 10, 5), c(2, 5, 7)], Some(2)),
        (&[c(1, 10, 7), c(2, 5, 7)], Some(2)),
        (&[c(3, 5, 7), c(2, 5, 7)], Some(2)),
        (&[c(1, 1, 3), c(2, 2, 9), c(3, 3, 9)], Some(2)),
    ];
    for (cands, want) in cases {
        assert_eq!(choose_master(cands).map(|c| c.id), *want, "{cands:?}");
    }
    // A deposed master's extra writes do not win over the newer epoch.
    let orphaned = Candidate {
        last_epoch: 1,
        ..c(1, 1, 120)
    };
    let current = Candidate {
        last_epoch: 2,
        ..c(2, 2, 110)
    };
    assert_eq!(choose_master(&[orphaned, current]).map(|c| c.id), Some(2));
}

fn report(id: u64, ready: bool, role: ReportedRole, applied: u64) -> WorkerReport {
    WorkerReport {
        id,
        pid: 100 + id,
        role,
        applied,
        last_epoch: 1,
        epoch: 1,
        ready,
        session: id,
    }
}

fn epoch_report(epoch: u64) -> WorkerReport {
    WorkerReport {
        epoch,
        ..report(1, true, ReportedRole::Slave, 0)
    }
}

#[test]
fn new_epochs_pass_every_epoch_seen() {
    let m = MasterRecord {
        pid: 1,
        id: 1,
        epoch: 4,
        heir: false,
    };
    assert_eq!(next_epoch(None, &[]), 1);
    assert_eq!(next_epoch(Some(&m), &[epoch_report(2)]), 5);
    assert_eq!(next_epoch(Some(&m), &[epoch_report(7), epoch_report(3)]), 8);
    assert_eq!(next_epoch(None, &[epoch_report(3)]), 4);
}

#[test]
fn workers_lead_or_follow_what_master_says() {
    let m = |pid, epoch| MasterRecord {
        pid,
        id: pid,
        epoch,
        heir: false,
    };
    let table = [
        (7, None, Some(m(7, 3)), RoleChange::Lead { epoch: 3 }),
        (7, None, Some(m(8, 3)), RoleChange::Stay),
        (7, None, None, RoleChange::Stay),
        (7, Some(3), Some(m(7, 3)), RoleChange::Stay),
        (7, Some(3), Some(m(7, 4)), RoleChange::Lead { epoch: 4 }),
        (7, Some(3), Some(m(8, 4)), RoleChange::Follow),
        (7, Some(3), Some(m(8, 3)), RoleChange::Follow),
        (7, Some(3), None, RoleChange::Follow),
    ];
    for (pid, leading, master, want) in table {
        assert_eq!(
            role_change(pid, leading, master.as_ref()),
            want,
            "{master:?}"
        );
    }
}

fn ids(c: Result<Vec<Candidate>, String>) -> Option<Vec<u64>> {
    c.ok().map(|c| c.into_iter().map(|c| c.id).collect())
}

fn heirs(ids: &[u64]) -> Succession {
    let mut s = Succession::default();
    for &id in ids {
        s.master_lost(id);
    }
    s
}

#[test]
fn only_caught_up_workers_or_every_lost_masters_store_may_lead() {
    use ReportedRole::{Declined, Slave};
    let ready = report(2, true, Slave, 5);
    let behind = report(3, false, Slave, 9);
    let back = report(1, false, Slave, 7);
    let declined = report(4, true, Declined, 9);
    type Row<'a> = (Vec<WorkerReport>, &'a [u64], Option<Vec<u64>>);
    let table: &[Row] = &[
        (vec![ready, behind, back], &[1], Some(vec![2])),
        (vec![ready, declined], &[], Some(vec![2])),
        // Nobody caught up: the dead master over its own store, which
        // holds everything a replica applied (it flushed each write
        // before publishing it) ...
        (
            vec![behind, report(1, false, Slave, 9)],
            &[1],
            Some(vec![1]),
        ),
        // ... unless that store was lost (started again over an empty or
        // older disk): a replica with a newer history stands too.
        (vec![behind, back], &[1], Some(vec![1, 3])),
        (
            vec![behind, report(1, false, Slave, 0)],
            &[1],
            Some(vec![1, 3]),
        ),
        // ... and not before it is back.
        (vec![behind], &[1], None),
        // Two masters lost (the second one elected, killed before it
        // led): both stores are heard, and both must be back.
        (vec![behind, back], &[1, 3], Some(vec![3, 1])),
        (vec![back], &[1, 3], None),
        // Startup: no master lost; each holds what its store holds.
        (vec![behind, back], &[], Some(vec![3, 1])),
        (vec![declined], &[], Some(vec![])),
        // The only heir declined: asked again rather than no way forward.
        (vec![report(1, false, Declined, 7)], &[1], Some(vec![1])),
    ];
    for (reports, lost, want) in table {
        let got = ids(eligible(reports, &heirs(lost), None).map(|(c, _)| c));
        assert_eq!(got, *want, "{reports:?} {lost:?}");
    }
}

/// An heir's store back older than a live replica's (its disk lost): the
/// workers lost meanwhile are heard before anyone leads (one may hold
/// what only it installed), then the newest history among all stands.
#[test]
fn a_lost_heir_store_waits_for_every_worker_lost_meanwhile() {
    use ReportedRole::Slave;
    let mut lost = heirs(&[1]);
    lost.worker_lost(2);
    let empty_heir = report(1, false, Slave, 0);
    let other = report(3, false, Slave, 6);
    let installer = report(2, false, Slave, 7);
    let got = eligible(&[empty_heir, other], &lost, None);
    assert!(
        matches!(&got, Err(why) if why.contains("worker 2")),
        "{got:?}"
    );
    let got = ids(eligible(&[empty_heir, other, installer], &lost, None).map(|(c, _)| c));
    assert_eq!(got, Some(vec![1, 3, 2]));
    // With the heir's store whole, nobody else is waited for.
    let whole_heir = report(1, false, Slave, 7);
    let got = ids(eligible(&[whole_heir, other], &lost, None).map(|(c, _)| c));
    assert_eq!(got, Some(vec![1]));
    // A master that leads ends it.
    lost.master_leads(3);
    assert!(eligible(&[report(3, false, Slave, 6)], &lost, None).is_ok());
}

#[test]
fn a_promotee_lost_before_it_led_does_not_shadow_the_old_master() {
    use ReportedRole::Slave;
    // The old master (1) acknowledged up to 100; the promotee (2) was
    // killed mid-drain and came back with 95 flushed.
    let old = report(1, false, Slave, 100);
    let promotee = report(2, false, Slave, 95);
    let view: BTreeMap<u64, WorkerReport> = [(old.pid, old), (promotee.pid, promotee)].into();
    let lost = heirs(&[1, 2]);
    let leaving = BTreeSet::new();
    let got = ballot(&view, None, false, None, &lost, &leaving);
    assert!(matches!(got, Ballot::Elect(m) if m.id == 1), "{got:?}");
    // The rule before: only the last master lost may lead.
    let mut forgetful = Succession::mutated(Mutation::OnlyLastMaster);
    forgetful.master_lost(1);
    forgetful.master_lost(2);
    let got = ballot(&view, None, false, None, &forgetful, &leaving);
    assert!(matches!(got, Ballot::Elect(m) if m.id == 2), "{got:?}");
    // A master that leads closes the succession: its store stands alone.
    let mut led = lost.clone();
    led.master_leads(3);
    assert_eq!(led.heirs().iter().copied().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn a_ballot_keeps_a_live_master_and_skips_the_dead_and_the_leaving() {
    use ReportedRole::{Master, Slave};
    let m = report(1, true, Master, 10);
    let s2 = report(2, true, Slave, 10);
    let s3 = report(3, true, Slave, 10);
    let view: BTreeMap<u64, WorkerReport> = [(m.pid, m), (s2.pid, s2), (s3.pid, s3)].into();
    let rec = MasterRecord {
        pid: m.pid,
        id: 1,
        epoch: 4,
        heir: false,
    };
    let none = BTreeSet::new();
    let s = Succession::default();
    assert_eq!(
        ballot(&view, Some(&rec), false, None, &s, &none),
        Ballot::Keep
    );
    // The master is dead: the lowest pid of the caught-up others.
    let got = ballot(&view, Some(&rec), false, Some(m.pid), &s, &none);
    assert_eq!(
        got,
        Ballot::Elect(MasterRecord {
            pid: s2.pid,
            id: 2,
            epoch: 5,
            heir: false,
        })
    );
    // Changed meanwhile (claimed again): it stays, even if thought dead.
    assert_eq!(
        ballot(&view, Some(&rec), true, Some(m.pid), &s, &none),
        Ballot::Keep
    );
    // A slave being stopped on purpose is never elected.
    let leaving: BTreeSet<u64> = [s2.pid].into();
    let got = ballot(&view, Some(&rec), false, Some(m.pid), &s, &leaving);
    assert!(matches!(got, Ballot::Elect(r) if r.id == 3), "{got:?}");
}
