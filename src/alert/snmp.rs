//! SNMPv2c traps: one per event to each `[[alert.snmp]]` receiver, over
//! UDP, fire-and-forget (a trap is never acknowledged; an *inform* would
//! be, but most NMSes take traps).
//!
//! The message (RFC 1901 community header, RFC 3416 SNMPv2-Trap-PDU) is
//! BER-encoded by the `rasn-snmp` crate. Its variable bindings, in the order
//! RFC 3416 requires for the first two:
//!
//! | OID | type | value |
//! |---|---|---|
//! | `1.3.6.1.2.1.1.3.0` sysUpTime.0 | TimeTicks | this host's uptime, 1/100 s |
//! | `1.3.6.1.6.3.1.1.4.1.0` snmpTrapOID.0 | OID | `ENTERPRISE.1.0.N`, N per event kind ([`kind_number`]) |
//! | `ENTERPRISE.1.1.1.0` | OCTET STRING | cluster name |
//! | `ENTERPRISE.1.1.2.0` | OCTET STRING | node (`master`/`slave`) |
//! | `ENTERPRISE.1.1.3.0` | OCTET STRING | event kind (`takeover`...) |
//! | `ENTERPRISE.1.1.4.0` | OCTET STRING | reason |
//!
//! **`ENTERPRISE` is `1.3.6.1.4.1.99999`, a placeholder**: 99999 is not a
//! private enterprise number assigned to this project by IANA. The OIDs
//! are stable within sip-ha, so an NMS can match them, but a site that
//! wants registered OIDs must change [`ENTERPRISE`] to its own PEN.

use crate::config::SnmpTarget;
use anyhow::{anyhow, bail, Context, Result};
use rasn::types::{ObjectIdentifier, OctetString};
use rasn_smi::v1::TimeTicks;
use rasn_smi::v2::{ApplicationSyntax, ObjectSyntax, SimpleSyntax};
use rasn_snmp::v2::{Pdu, Trap, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use sip_ha_core::EventKind;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// The enterprise subtree of every sip-ha OID: a **placeholder** private
/// enterprise number (see the module docs).
pub const ENTERPRISE: &[u32] = &[1, 3, 6, 1, 4, 1, 99999];

const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const SNMP_TRAP_OID: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

/// How long a host name may take to resolve before the trap is given up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a trap says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrapInfo {
    pub cluster: String,
    pub node: String,
    /// `takeover`, ..., or `test`.
    pub kind: String,
    /// Numbers the notification: `ENTERPRISE.1.0.<number>`.
    pub number: u32,
    pub reason: String,
}

/// The notification number of each event kind (`ENTERPRISE.1.0.N`).
pub fn kind_number(kind: EventKind) -> u32 {
    match kind {
        EventKind::Takeover => 1,
        EventKind::Release => 2,
        EventKind::ManualFailover => 3,
        EventKind::AutoFailback => 4,
        EventKind::Disabled => 5,
        EventKind::Enabled => 6,
        EventKind::SplitBrain => 7,
        EventKind::ServiceDown => 8,
        EventKind::ServiceUp => 9,
        EventKind::PeerLost => 10,
        EventKind::PeerBack => 11,
        EventKind::Isolated => 12,
        EventKind::WitnessBack => 13,
        EventKind::AddressConflict => 14,
        EventKind::Refused => 15,
        EventKind::LocalRestart => 16,
        EventKind::SyncFailing => 17,
        EventKind::SyncRecovered => 18,
        EventKind::SyncConflict => 19,
        EventKind::SyncRefused => 20,
    }
}

/// The notification number of `sip-ha alert --test`.
pub const TEST_NUMBER: u32 = 99;

fn oid(arcs: &[u32]) -> ObjectIdentifier {
    // Every OID here starts 1.3.6.1: always a valid identifier.
    ObjectIdentifier::new_unchecked(Cow::Owned(arcs.to_vec()))
}

fn under_enterprise(tail: &[u32]) -> ObjectIdentifier {
    let mut arcs = ENTERPRISE.to_vec();
    arcs.extend_from_slice(tail);
    oid(&arcs)
}

fn text(arcs_tail: &[u32], value: &str) -> VarBind {
    VarBind {
        name: under_enterprise(arcs_tail),
        value: VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::String(
            OctetString::from_slice(value.as_bytes()),
        ))),
    }
}

/// The trap as BER bytes, ready for a UDP datagram.
pub fn encode(
    info: &TrapInfo,
    community: &str,
    uptime_centis: u32,
    request_id: i32,
) -> Result<Vec<u8>> {
    let varbinds = vec![
        VarBind {
            name: oid(SYS_UPTIME),
            value: VarBindValue::Value(ObjectSyntax::ApplicationWide(ApplicationSyntax::Ticks(
                TimeTicks(uptime_centis),
            ))),
        },
        VarBind {
            name: oid(SNMP_TRAP_OID),
            value: VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(
                under_enterprise(&[1, 0, info.number]),
            ))),
        },
        text(&[1, 1, 1, 0], &info.cluster),
        text(&[1, 1, 2, 0], &info.node),
        text(&[1, 1, 3, 0], &info.kind),
        text(&[1, 1, 4, 0], &info.reason),
    ];
    let message = Message {
        version: Message::<Trap>::VERSION.into(),
        community: OctetString::from_slice(community.as_bytes()),
        data: Trap(Pdu {
            request_id,
            error_status: Pdu::ERROR_STATUS_NO_ERROR,
            error_index: 0,
            variable_bindings: varbinds,
        }),
    };
    rasn::ber::encode(&message).map_err(|e| anyhow!("cannot encode the SNMP trap: {e}"))
}

/// This host's uptime in hundredths of a second (TimeTicks wrap at 2^32,
/// about 497 days, as SNMP agents' do). 0 when it cannot be read.
pub fn uptime_centis() -> u32 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| ((secs * 100.0) as u64 % (1u64 << 32)) as u32)
}

fn request_id() -> i32 {
    getrandom::u32().map_or(1, |n| (n >> 1) as i32)
}

/// `host:port` as written, IPv6 in brackets.
pub fn describe(target: &SnmpTarget) -> String {
    if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

async fn resolve(target: &SnmpTarget) -> Result<SocketAddr> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| anyhow!("resolving {} took over {RESOLVE_TIMEOUT:?}", target.host))?
        .with_context(|| format!("cannot resolve {}", target.host))?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("{} has no address", target.host))
}

/// Send `info` as a trap to `target`. With `listen`, wait that long for an
/// ICMP "port unreachable" (which Linux reports on a connected UDP socket as
/// "connection refused"): silence is the best a trap can get.
pub async fn send(target: &SnmpTarget, info: &TrapInfo, listen: Option<Duration>) -> Result<()> {
    let packet = encode(info, &target.community, uptime_centis(), request_id())?;
    let addr = resolve(target).await?;
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("cannot open a UDP socket for the trap")?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot send to {addr}"))?;
    socket
        .send(&packet)
        .await
        .with_context(|| format!("cannot send the trap to {addr}"))?;
    if let Some(wait) = listen {
        let mut buf = [0u8; 64];
        if let Ok(Err(e)) = tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                bail!("{addr} answered port unreachable: no trap receiver listens there");
            }
            return Err(e).with_context(|| format!("sending to {addr}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_decodes_back_with_its_varbinds_in_order() {
        let info = TrapInfo {
            cluster: "pbx".into(),
            node: "slave".into(),
            kind: "takeover".into(),
            number: kind_number(EventKind::Takeover),
            reason: "the master's service is down".into(),
        };
        let bytes = encode(&info, "s3cret", 12345, 77).unwrap();
        // A SEQUENCE holding version 1 (v2c) and the community.
        assert_eq!(bytes[0], 0x30);
        let m: Message<Trap> = rasn::ber::decode(&bytes).unwrap();
        assert_eq!(m.version, 1.into());
        assert_eq!(&m.community[..], b"s3cret");
        let pdu = m.data.0;
        assert_eq!(pdu.request_id, 77);
        let vb = &pdu.variable_bindings;
        assert_eq!(vb.len(), 6);
        assert_eq!(vb[0].name, oid(SYS_UPTIME));
        assert_eq!(
            vb[0].value,
            VarBindValue::Value(ObjectSyntax::ApplicationWide(ApplicationSyntax::Ticks(
                TimeTicks(12345)
            )))
        );
        assert_eq!(vb[1].name, oid(SNMP_TRAP_OID));
        assert_eq!(
            vb[1].value,
            VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(oid(&[
                1, 3, 6, 1, 4, 1, 99999, 1, 0, 1
            ]))))
        );
        let strings: Vec<(Vec<u32>, String)> = vb[2..]
            .iter()
            .map(|v| match &v.value {
                VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::String(s))) => {
                    (v.name.to_vec(), String::from_utf8_lossy(s).into_owned())
                }
                other => panic!("not a string: {other:?}"),
            })
            .collect();
        assert_eq!(
            strings,
            vec![
                (vec![1, 3, 6, 1, 4, 1, 99999, 1, 1, 1, 0], "pbx".to_string()),
                (
                    vec![1, 3, 6, 1, 4, 1, 99999, 1, 1, 2, 0],
                    "slave".to_string()
                ),
                (
                    vec![1, 3, 6, 1, 4, 1, 99999, 1, 1, 3, 0],
                    "takeover".to_string()
                ),
                (
                    vec![1, 3, 6, 1, 4, 1, 99999, 1, 1, 4, 0],
                    "the master's service is down".to_string()
                ),
            ]
        );
    }

    #[test]
    fn every_event_kind_has_its_own_number() {
        use EventKind::*;
        let all = [
            Takeover,
            Release,
            ManualFailover,
            AutoFailback,
            Disabled,
            Enabled,
            SplitBrain,
            ServiceDown,
            ServiceUp,
            PeerLost,
            PeerBack,
            Isolated,
            WitnessBack,
            AddressConflict,
            Refused,
            LocalRestart,
        ];
        let mut numbers: Vec<u32> = all.iter().map(|k| kind_number(*k)).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), all.len());
        assert!(!numbers.contains(&TEST_NUMBER));
    }

    #[tokio::test]
    async fn nobody_listening_is_reported_when_asked_to_listen() {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let target = SnmpTarget {
            host: "127.0.0.1".into(),
            port,
            community: "public".into(),
        };
        let info = TrapInfo {
            cluster: "pbx".into(),
            node: "master".into(),
            kind: "test".into(),
            number: TEST_NUMBER,
            reason: "test".into(),
        };
        let e = send(&target, &info, Some(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("port unreachable"), "{e:#}");
        // Without listening, a trap is fire-and-forget: no error.
        send(&target, &info, None).await.unwrap();
    }
}
