//! Table tests: one situation each, as an operator would describe it.

mod common;

use common::Pair;
use sip_ha_core::{Action, Command, EventKind, Failback, Hook, Policy, Role, Stance};

fn events(log: &[common::RoundLog], role: Role) -> Vec<(EventKind, String)> {
    log.iter()
        .flat_map(|r| r.steps.iter())
        .filter(|(r, ..)| *r == role)
        .flat_map(|(_, actions, ..)| actions.iter())
        .filter_map(|a| match a {
            Action::Notify(e) => Some((e.kind, e.reason.clone())),
            _ => None,
        })
        .collect()
}

fn actions(log: &[common::RoundLog], role: Role) -> Vec<Action> {
    log.iter()
        .flat_map(|r| r.steps.iter())
        .filter(|(r, ..)| *r == role)
        .flat_map(|(_, actions, ..)| actions.iter().cloned())
        .collect()
}

/// A pair that has settled into the normal state: master active.
fn normal() -> Pair {
    let mut p = Pair::new(Policy::default());
    p.rounds(5);
    assert_eq!(
        p.holder(),
        Some(Role::Master),
        "master is active by default"
    );
    p
}

/// A pair where the master failed and the slave took over.
fn failed_over() -> Pair {
    let mut p = normal();
    p.master.service_ok = false;
    p.rounds(6);
    assert_eq!(p.holder(), Some(Role::Slave));
    p
}

#[test]
fn fresh_pair_master_takes_the_address_slave_stays_ready() {
    let mut p = Pair::new(Policy::default());
    let log = p.rounds(5);
    assert_eq!(p.holder(), Some(Role::Master));
    assert_eq!(p.slave.node.memory().stance, Stance::Ready);
    assert_eq!(p.slave.node.memory().active, Some(Role::Master));
    let ev = events(&log, Role::Master);
    assert!(
        ev.iter()
            .any(|(k, r)| *k == EventKind::Takeover && r.contains("active by default")),
        "{ev:?}"
    );
    assert!(events(&log, Role::Slave)
        .iter()
        .all(|(k, _)| *k != EventKind::Takeover));
}

#[test]
fn fresh_state_is_never_active_until_health_is_known() {
    let mut p = Pair::new(Policy::default());
    // rise_after = 2: the first round cannot know the service is up.
    p.round();
    assert_eq!(p.holder(), None);
    assert_eq!(p.master.node.memory().stance, Stance::Yield);
}

#[test]
fn master_service_down_slave_takes_over() {
    let mut p = normal();
    p.master.service_ok = false;
    let log = p.rounds(6);
    assert_eq!(p.holder(), Some(Role::Slave));
    let m = events(&log, Role::Master);
    assert!(m.iter().any(|(k, _)| *k == EventKind::ServiceDown), "{m:?}");
    assert!(
        m.iter()
            .any(|(k, r)| *k == EventKind::Release && r.contains("local service is down")),
        "{m:?}"
    );
    let s = events(&log, Role::Slave);
    assert!(
        s.iter()
            .any(|(k, r)| *k == EventKind::Takeover && r.contains("service is down")),
        "{s:?}"
    );
    assert!(actions(&log, Role::Slave).contains(&Action::RunHook(Hook::OnActive)));
    assert!(actions(&log, Role::Master).contains(&Action::RunHook(Hook::OnStandby)));
    assert!(p.slave.node.memory().epoch > p.master.node.memory().epoch.saturating_sub(1));
}

#[test]
fn master_down_but_slave_down_too_master_keeps_the_address() {
    let mut p = normal();
    p.slave.service_ok = false;
    p.rounds(4);
    p.master.service_ok = false;
    let log = p.rounds(6);
    assert_eq!(
        p.holder(),
        Some(Role::Master),
        "handing a dead service to a dead peer helps nobody"
    );
    assert!(events(&log, Role::Master)
        .iter()
        .any(|(k, _)| *k == EventKind::ServiceDown));
}

#[test]
fn master_powered_off_slave_takes_over_after_dead_after_rounds() {
    let mut p = normal();
    p.power_off(Role::Master);
    p.rounds(2);
    assert_eq!(p.holder(), None, "not dead yet after 2 of 3 rounds");
    let log = p.rounds(2);
    assert_eq!(p.holder(), Some(Role::Slave));
    let s = events(&log, Role::Slave);
    assert!(s.iter().any(|(k, _)| *k == EventKind::PeerLost), "{s:?}");
    assert!(
        s.iter()
            .any(|(k, r)| *k == EventKind::Takeover && r.contains("unreachable")),
        "{s:?}"
    );
}

#[test]
fn recovered_master_does_not_fail_back_by_itself() {
    let mut p = failed_over();
    p.master.service_ok = true;
    p.rounds(30);
    assert_eq!(p.holder(), Some(Role::Slave), "failback is manual");
    assert_eq!(p.master.node.memory().stance, Stance::Ready);
    assert_eq!(p.master.node.memory().active, Some(Role::Slave));
}

#[test]
fn rebooted_master_stays_standby_while_slave_is_active() {
    let mut p = normal();
    p.power_off(Role::Master);
    p.rounds(5);
    assert_eq!(p.holder(), Some(Role::Slave));
    p.power_on(Role::Master);
    p.rounds(20);
    assert_eq!(p.holder(), Some(Role::Slave));
}

#[test]
fn manual_failback_with_f_on_the_slave_pushes_then_hands_back() {
    let mut p = failed_over();
    p.master.service_ok = true;
    p.rounds(4);
    p.slave.command = Some(Command::Failover { force: false });
    let log = p.rounds(3);
    assert_eq!(p.holder(), Some(Role::Master));
    let a = actions(&log, Role::Slave);
    let push = a
        .iter()
        .position(|a| *a == Action::PushSync)
        .expect("push before handing back");
    let release = a
        .iter()
        .position(|a| *a == Action::ReleaseAddress)
        .expect("release");
    assert!(push < release, "{a:?}");
    assert!(events(&log, Role::Slave)
        .iter()
        .any(|(k, _)| *k == EventKind::ManualFailover));
    // And it stays there: the slave does not take it back.
    p.rounds(20);
    assert_eq!(p.holder(), Some(Role::Master));
}

#[test]
fn f_on_the_standby_is_refused() {
    let mut p = normal();
    p.slave.command = Some(Command::Failover { force: false });
    let log = p.rounds(1);
    let s = events(&log, Role::Slave);
    assert!(
        s.iter()
            .any(|(k, r)| *k == EventKind::Refused && r.contains("not active")),
        "{s:?}"
    );
    assert_eq!(p.holder(), Some(Role::Master));
}

#[test]
fn f_to_an_unhealthy_peer_is_refused_unless_forced() {
    let mut p = normal();
    p.slave.service_ok = false;
    p.rounds(4);
    p.master.command = Some(Command::Failover { force: false });
    let log = p.rounds(1);
    assert_eq!(p.holder(), Some(Role::Master));
    let m = events(&log, Role::Master);
    assert!(
        m.iter()
            .any(|(k, r)| *k == EventKind::Refused && r.contains("--force")),
        "{m:?}"
    );

    p.master.command = Some(Command::Failover { force: true });
    let log = p.rounds(1);
    assert!(actions(&log, Role::Master).contains(&Action::ReleaseAddress));
}

#[test]
fn disable_hands_over_and_stays_out_until_enabled() {
    let mut p = normal();
    p.master.command = Some(Command::Disable);
    let log = p.rounds(3);
    assert_eq!(p.holder(), Some(Role::Slave));
    assert!(actions(&log, Role::Master).contains(&Action::RunHook(Hook::OnDisable)));
    // Even if the slave fails, a disabled master does not retake.
    p.slave.service_ok = false;
    p.rounds(10);
    assert!(!p.master.holds);
    // Enabled again: it comes back, and takes since the slave is down.
    p.master.command = Some(Command::Enable);
    let log = p.rounds(5);
    assert!(events(&log, Role::Master)
        .iter()
        .any(|(k, _)| *k == EventKind::Enabled));
    assert!(p.master.holds);
}

#[test]
fn enabled_master_does_not_take_from_a_healthy_active_slave() {
    let mut p = normal();
    p.master.command = Some(Command::Disable);
    p.rounds(3);
    p.master.command = Some(Command::Enable);
    p.rounds(10);
    assert_eq!(p.holder(), Some(Role::Slave));
}

#[test]
fn split_brain_higher_epoch_keeps_the_address() {
    let mut p = failed_over();
    p.master.service_ok = true;
    p.rounds(3);
    // Someone puts the address on the master by hand.
    p.master.holds = true;
    p.master.published = p.master.node.report(true);
    p.slave.published = p.slave.node.report(true);
    let log = p.rounds(2);
    assert_eq!(
        p.holder(),
        Some(Role::Slave),
        "the slave took over later: its epoch is higher"
    );
    let m = events(&log, Role::Master);
    assert!(
        m.iter()
            .any(|(k, r)| *k == EventKind::SplitBrain && r.contains("slave keeps")),
        "{m:?}"
    );
    let s = events(&log, Role::Slave);
    assert!(s.iter().any(|(k, _)| *k == EventKind::SplitBrain), "{s:?}");
}

#[test]
fn isolated_slave_never_takes_over() {
    let mut p = normal();
    p.slave.witness_ok = false;
    p.power_off(Role::Master);
    let log = p.rounds(10);
    assert_eq!(p.holder(), None);
    assert!(events(&log, Role::Slave)
        .iter()
        .any(|(k, _)| *k == EventKind::Isolated));
}

#[test]
fn link_between_servers_cut_slave_sees_the_address_answered_and_holds_off() {
    let mut p = normal();
    p.link_up = false;
    let log = p.rounds(10);
    assert_eq!(p.holder(), Some(Role::Master));
    let s = events(&log, Role::Slave);
    assert_eq!(
        s.iter()
            .filter(|(k, _)| *k == EventKind::AddressConflict)
            .count(),
        1,
        "alerted once: {s:?}"
    );
    p.link_up = true;
    p.rounds(3);
    assert_eq!(p.holder(), Some(Role::Master));
}

#[test]
fn restart_with_unknown_health_does_not_move_the_address() {
    let mut p = normal();
    // The master's sip-ha restarts with a lost state file while it holds.
    let policy = Policy::default();
    p.master.node = sip_ha_core::Node::new(Role::Master, policy, Default::default());
    p.round();
    assert_eq!(p.holder(), Some(Role::Master));
    assert_eq!(p.master.node.memory().stance, Stance::Active);
}

#[test]
fn auto_failback_waits_for_the_hold_down() {
    let policy = Policy {
        failback: Failback::Auto,
        failback_hold_down_ms: 10_000,
        ..Policy::default()
    };
    let mut p = Pair::new(policy);
    p.rounds(5);
    p.master.service_ok = false;
    p.rounds(6);
    assert_eq!(p.holder(), Some(Role::Slave));
    p.master.service_ok = true;
    p.rounds(8);
    assert_eq!(p.holder(), Some(Role::Slave), "not before the hold-down");
    let log = p.rounds(8);
    assert_eq!(p.holder(), Some(Role::Master));
    assert!(events(&log, Role::Slave)
        .iter()
        .any(|(k, _)| *k == EventKind::AutoFailback));
}

#[test]
fn both_recover_together_only_the_master_takes() {
    let mut p = Pair::new(Policy::default());
    p.master.service_ok = false;
    p.slave.service_ok = false;
    p.rounds(5);
    assert_eq!(p.holder(), None);
    p.master.service_ok = true;
    p.slave.service_ok = true;
    for _ in 0..6 {
        p.round();
        assert!(!(p.master.holds && p.slave.holds));
    }
    assert_eq!(p.holder(), Some(Role::Master));
}

#[test]
fn active_node_isolated_hands_over_to_a_ready_peer() {
    let mut p = normal();
    p.master.witness_ok = false;
    let log = p.rounds(6);
    assert_eq!(p.holder(), Some(Role::Slave));
    assert!(events(&log, Role::Master)
        .iter()
        .any(|(k, r)| *k == EventKind::Release && r.contains("witness")));
}

fn with_restarts(max: u32) -> Policy {
    Policy {
        max_restarts: max,
        restart_window_ms: 3_600_000,
        ..Policy::default()
    }
}

#[test]
fn a_restart_that_brings_the_service_back_avoids_the_failover() {
    let mut p = Pair::new(with_restarts(2));
    p.rounds(5);
    assert_eq!(p.holder(), Some(Role::Master));
    p.master.service_ok = false;
    let log = p.rounds(3);
    assert!(actions(&log, Role::Master).contains(&Action::RestartService));
    assert!(events(&log, Role::Master)
        .iter()
        .any(|(k, _)| *k == EventKind::LocalRestart));
    // The restart worked.
    p.master.service_ok = true;
    p.rounds(10);
    assert_eq!(p.holder(), Some(Role::Master), "no failover");
}

#[test]
fn when_restarts_run_out_the_slave_takes_over() {
    let mut p = Pair::new(with_restarts(2));
    p.rounds(5);
    p.master.service_ok = false;
    let log = p.rounds(14);
    let restarts = actions(&log, Role::Master)
        .iter()
        .filter(|a| **a == Action::RestartService)
        .count();
    assert_eq!(restarts, 2, "max_restarts per window");
    assert_eq!(p.holder(), Some(Role::Slave));
}

#[test]
fn a_master_that_starts_later_is_not_overtaken_by_the_slave() {
    let mut p = Pair::new(Policy::default());
    // The master's sip-ha starts while the slave has been running for a
    // while: its health is unknown for rise_after rounds.
    p.master.alive = false;
    p.rounds(2);
    p.master.alive = true;
    p.rounds(1);
    assert_eq!(p.holder(), None, "the slave waits while the master starts");
    // With dead_after = 3 the slave had counted the master dead: it must
    // not take while the master is back and starting.
    p.rounds(5);
    assert_eq!(p.holder(), Some(Role::Master));
}

#[test]
fn a_take_refused_again_and_again_is_reported_once() {
    let mut p = normal();
    p.power_off(Role::Master);
    p.rounds(4);
    assert_eq!(p.holder(), Some(Role::Slave));
    // A stranger now answers for the address on the master's side: make
    // every take of the master fail, as the driver would.
    let (mut reported, mut attempts) = (0, 0);
    p.slave.command = Some(Command::Disable);
    p.power_on(Role::Master);
    for _ in 0..10 {
        let obs_log = p.round();
        for (role, actions, obs, _) in &obs_log.steps {
            if *role == Role::Master && actions.contains(&Action::TakeAddress) {
                attempts += 1;
                p.master.holds = false;
                let extra = p.master.node.take_failed("a stranger answers", obs.now_ms);
                reported += extra
                    .iter()
                    .filter(
                        |a| matches!(a, Action::Notify(e) if e.kind == EventKind::AddressConflict),
                    )
                    .count();
                p.master.published = p.master.node.report(false);
            }
        }
    }
    assert!(attempts > 2, "it keeps trying: {attempts}");
    assert_eq!(reported, 1, "one alert for a lasting conflict");
}
