//! Property tests: random faults and commands against two simulated nodes,
//! checking the safety rules after every round.

mod common;

use common::{Pair, RoundLog};
use proptest::prelude::*;
use sip_ha_core::{Action, Command, EventKind, Failback, Health, Policy, Role};

#[derive(Debug, Clone)]
enum Op {
    Round,
    Service(Role, bool),
    Witness(Role, bool),
    Lan(Role, bool),
    Link(bool),
    PowerOff(Role),
    PowerOn(Role),
    Cmd(Role, Command),
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Master), Just(Role::Slave)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Round),
        2 => (role(), any::<bool>()).prop_map(|(r, b)| Op::Service(r, b)),
        1 => (role(), any::<bool>()).prop_map(|(r, b)| Op::Witness(r, b)),
        1 => (role(), any::<bool>()).prop_map(|(r, b)| Op::Lan(r, b)),
        1 => any::<bool>().prop_map(Op::Link),
        1 => role().prop_map(Op::PowerOff),
        1 => role().prop_map(Op::PowerOn),
        1 => (role(), prop_oneof![
            any::<bool>().prop_map(|force| Command::Failover { force }),
            Just(Command::Disable),
            Just(Command::Enable),
        ]).prop_map(|(r, c)| Op::Cmd(r, c)),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (1u32..4, 1u32..4, 1u32..4, any::<bool>(), 0u32..3).prop_map(|(f, r, d, auto, restarts)| {
        Policy {
            fail_after: f,
            rise_after: r,
            dead_after: d,
            failback: if auto {
                Failback::Auto
            } else {
                Failback::Manual
            },
            failback_hold_down_ms: 5_000,
            max_restarts: restarts,
            restart_window_ms: 10_000,
        }
    })
}

fn apply(p: &mut Pair, op: &Op) -> Option<RoundLog> {
    match op {
        Op::Round => return Some(p.round()),
        Op::Service(r, b) => p.host(*r).service_ok = *b,
        Op::Witness(r, b) => p.host(*r).witness_ok = *b,
        Op::Lan(r, b) => p.host(*r).lan_up = *b,
        Op::Link(b) => p.link_up = *b,
        Op::PowerOff(r) => p.power_off(*r),
        Op::PowerOn(r) => {
            if !p.host(*r).alive {
                p.power_on(*r)
            }
        }
        Op::Cmd(r, c) => p.host(*r).command = Some(*c),
    }
    None
}

/// Check every safety rule on one round. `held_before` is who held the
/// address when the round started.
fn check_round(
    p: &Pair,
    log: &RoundLog,
    held_before: (bool, bool),
    policy: &Policy,
) -> Result<(), TestCaseError> {
    // 1. Two nodes that can see each other never both hold the address.
    if p.see_each_other() {
        prop_assert!(
            !(p.master.holds && p.slave.holds),
            "both hold the address while they see each other: {log:#?}"
        );
    }
    for (role, actions, obs, mem) in &log.steps {
        let held = match role {
            Role::Master => held_before.0,
            Role::Slave => held_before.1,
        };
        for a in actions {
            match a {
                // 2. An unhealthy, isolated or disabled node never takes over.
                Action::TakeAddress => {
                    prop_assert_eq!(mem.health, Health::Up, "{:?} took while not healthy", role);
                    prop_assert!(obs.witness_ok, "{:?} took without reaching a witness", role);
                    prop_assert!(!mem.maintenance, "{:?} took while disabled", role);
                    prop_assert!(
                        !obs.address_conflict,
                        "{:?} took an address answered elsewhere",
                        role
                    );
                }
                // 3. Sync never flows from the standby.
                Action::PushSync => prop_assert!(held, "{:?} pushed while standby", role),
                _ => {}
            }
        }
        // 4. No automatic failback under failback = manual: a slave that
        // released had a reason other than the master being back.
        if policy.failback == Failback::Manual
            && *role == Role::Slave
            && actions.contains(&Action::ReleaseAddress)
        {
            let reasons: Vec<_> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Notify(e) => Some(e.kind),
                    _ => None,
                })
                .collect();
            let explained = obs.command.is_some()
                || mem.maintenance
                || mem.health == Health::Down
                || !obs.witness_ok
                || reasons.contains(&EventKind::SplitBrain);
            prop_assert!(
                explained,
                "slave released with no reason: {:?} {:?}",
                reasons,
                obs
            );
            prop_assert!(!reasons.contains(&EventKind::AutoFailback));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn safety_rules_hold_under_random_faults(policy in policy(), ops in prop::collection::vec(op(), 1..200)) {
        let mut p = Pair::new(policy.clone());
        for op in &ops {
            let held = (p.master.holds, p.slave.holds);
            if let Some(log) = apply(&mut p, op) {
                check_round(&p, &log, held, &policy)?;
            }
        }
    }

    /// Whatever happened before, once both servers are up, healthy, enabled
    /// and connected, exactly one holds the address within a few rounds.
    #[test]
    fn a_healthy_pair_always_settles_on_one_active(policy in policy(), ops in prop::collection::vec(op(), 1..120)) {
        let mut p = Pair::new(policy.clone());
        for op in &ops {
            apply(&mut p, op);
        }
        for r in [Role::Master, Role::Slave] {
            let h = p.host(r);
            h.service_ok = true;
            h.witness_ok = true;
            h.lan_up = true;
            if !h.alive {
                p.power_on(r);
            }
            p.host(r).command = Some(Command::Enable);
        }
        p.link_up = true;
        // Long enough for an auto failback's hold-down (5 rounds) to pass too.
        let settle = (policy.rise_after + policy.dead_after + 12) as usize;
        for _ in 0..settle {
            p.round();
            prop_assert!(!(p.master.holds && p.slave.holds));
        }
        prop_assert!(p.holder().is_some(), "nobody active after {settle} calm rounds");
    }

    /// When the active node dies for good, a healthy peer that reaches a
    /// witness takes over within dead_after + 2 rounds.
    #[test]
    fn a_dead_active_node_is_replaced(policy in policy(), warmup in 4usize..10) {
        let mut p = Pair::new(policy.clone());
        p.rounds(warmup + policy.rise_after as usize);
        let active = p.holder().expect("someone active after warm-up");
        p.power_off(active);
        p.rounds(policy.dead_after as usize + 2);
        prop_assert_eq!(p.holder(), Some(active.peer()));
    }
}
