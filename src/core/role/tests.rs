//! Scenarios of a worker's role: inputs in, effects out.

use super::*;

fn named(pid: u64, epoch: u64) -> Input {
    Input::Master(Some(MasterRecord {
        pid,
        id: pid,
        epoch,
        heir: false,
    }))
}

#[test]
fn an_elected_slave_drains_stops_its_slave_then_leads() {
    let mut r = RoleCore::new(7);
    assert_eq!(r.on(named(7, 2)), vec![Effect::Drain, Effect::Report]);
    assert_eq!(r.reported(), ReportedRole::Promoting);
    // What /master says during the switch waits for its end.
    assert!(r.on(named(7, 2)).is_empty());
    assert_eq!(r.on(Input::Drained(true)), vec![Effect::StopSlave]);
    assert_eq!(
        r.on(Input::Stopped),
        vec![
            Effect::RevokeLease,
            Effect::StartMaster { epoch: 2 },
            Effect::Report
        ]
    );
    assert_eq!(r.leading(), Some(2));
    assert_eq!(r.reported(), ReportedRole::Master);
}

#[test]
fn a_failed_drain_keeps_the_slave_tries_again_then_declines() {
    let mut r = RoleCore::new(7);
    for _ in 1..LEAD_TRIES {
        r.on(named(7, 2));
        let fx = r.on(Input::Drained(false));
        assert_eq!(fx[0], Effect::Resume, "never a second slave: {fx:?}");
        assert!(fx.contains(&Effect::Wake {
            after_ms: LEAD_RETRY_MS
        }));
        assert_eq!(r.on(Input::Woke), vec![Effect::Drain, Effect::Report]);
    }
    let fx = r.on(Input::Drained(false));
    assert_eq!(fx, vec![Effect::Resume, Effect::Report]);
    assert_eq!(r.reported(), ReportedRole::Declined);
    // Declined for that epoch; elected again under another, it tries.
    assert!(r.on(named(7, 2)).is_empty());
    assert_eq!(r.on(named(7, 3)), vec![Effect::Drain, Effect::Report]);
}

#[test]
fn a_master_named_again_starts_over_and_a_deposed_one_follows() {
    let mut r = RoleCore::new(7);
    r.on(named(7, 2));
    r.on(Input::Drained(true));
    r.on(Input::Stopped);
    assert!(r.on(named(7, 2)).is_empty());
    assert_eq!(
        r.on(named(7, 4)),
        vec![Effect::RevokeLease, Effect::StopMaster]
    );
    r.on(Input::Stopped);
    assert_eq!(r.leading(), Some(4));
    // Another named: no more writes here at once, then a slave.
    assert_eq!(
        r.on(Input::NotMine(Some(MasterRecord {
            pid: 8,
            id: 8,
            epoch: 5,
            heir: false,
        }))),
        vec![Effect::RevokeLease, Effect::StopMaster]
    );
    assert_eq!(
        r.on(Input::Stopped),
        vec![Effect::StartSlave, Effect::Report]
    );
    assert_eq!(r.reported(), ReportedRole::Slave);
}

#[test]
fn what_master_said_during_a_switch_is_decided_on_after_it() {
    let mut r = RoleCore::new(7);
    r.on(named(7, 2));
    r.on(Input::Drained(true));
    // Deposed while its slave stops: it leads, then follows at once.
    r.on(named(8, 3));
    let fx = r.on(Input::Stopped);
    assert!(
        fx.ends_with(&[Effect::RevokeLease, Effect::StopMaster]),
        "{fx:?}"
    );
    assert_eq!(
        r.on(Input::Stopped),
        vec![Effect::StartSlave, Effect::Report]
    );
}

#[test]
fn nothing_happens_after_shutdown() {
    let mut r = RoleCore::new(7);
    assert_eq!(r.on(Input::Shutdown), vec![Effect::RevokeLease]);
    assert!(r.on(named(7, 2)).is_empty());
    assert!(r.on(Input::Drained(true)).is_empty());
}

#[test]
fn a_drain_overtaken_by_another_election_is_given_up() {
    let mut r = RoleCore::new(7);
    r.on(named(7, 2));
    assert_eq!(r.on(named(8, 3)), vec![Effect::Resume, Effect::Report]);
    assert_eq!(r.reported(), ReportedRole::Slave);
    // The drain's late answer changes nothing.
    assert!(r.on(Input::Drained(true)).is_empty());
    // Elected again, under a newer epoch, it drains again.
    assert_eq!(r.on(named(7, 4)), vec![Effect::Drain, Effect::Report]);
    assert_eq!(
        r.on(named(7, 5)),
        vec![
            Effect::Resume,
            Effect::Report,
            Effect::Drain,
            Effect::Report
        ]
    );
}
