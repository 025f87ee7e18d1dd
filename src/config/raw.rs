//! The TOML as written: one struct per table, every value wrapped in
//! [`Spanned`] so that validation can name the line and column it came from.
//!
//! These structs check only *shape*: which keys exist and what TOML type each
//! holds. Every table refuses keys it does not know (`deny_unknown_fields`), so
//! a typo such as `intervall` is an error rather than a silently ignored line.
//! Almost every key is an `Option` here, even the required ones: whether a
//! value is present, in range and consistent with the rest of the file is
//! decided in [`load`](mod@super::load), which can then say so in words.
//!
//! Numbers are read as `i64` and narrowed later, so that `port = 70000` gets
//! a message about ports rather than about `u16`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::fmt;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub cluster: Option<Spanned<RawCluster>>,
    /// `[nodes.<name>]`: kept as a list of (name, table) so that an unknown
    /// name can be refused with its position, and listed in file order.
    pub nodes: Option<Spanned<Entries<RawNode>>>,
    pub ssh: Option<Spanned<RawSsh>>,
    pub health: Option<Spanned<RawHealth>>,
    pub peer: Option<Spanned<RawPeer>>,
    pub sync: Option<Spanned<RawSync>>,
    pub alert: Option<Spanned<RawAlert>>,
    pub hooks: Option<Spanned<RawHooks>>,
}

/// The entries of a table whose keys are names (`[nodes.<name>]`), as
/// (name, value) pairs. A map would lose the span of each name.
#[derive(Debug)]
pub(crate) struct Entries<V>(pub Vec<(Spanned<String>, Spanned<V>)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}

/// `[cluster]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Option<Spanned<String>>,
    pub service_address: Option<Spanned<String>>,
    pub failback: Option<Spanned<String>>,
    pub failback_hold_down: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub garp_count: Option<Spanned<i64>>,
    pub garp_interval: Option<Spanned<String>>,
    pub garp_refresh: Option<Spanned<String>>,
}

/// `[nodes.master]` and `[nodes.slave]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub address: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

/// `[ssh]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub identity: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub remote_command: Option<Spanned<String>>,
}

/// `[health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub interval: Option<Spanned<String>>,
    pub fail_after: Option<Spanned<i64>>,
    pub rise_after: Option<Spanned<i64>>,
    pub restart_command: Option<Spanned<String>>,
    pub max_restarts: Option<Spanned<i64>>,
    pub restart_window: Option<Spanned<String>>,
    #[serde(default)]
    pub check: Vec<Spanned<RawCheck>>,
}

/// One `[[health.check]]`.
///
/// Every key any kind uses is here; which of them belong to the check's
/// `kind` is decided in `load`, so the error can list what that kind takes.
/// A key no kind uses is refused by serde already.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub kind: Option<Spanned<String>>,
    /// The label; for a `process` check also the process name to look for.
    pub name: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    // asterisk, command
    pub command: Option<Spanned<String>>,
    // asterisk
    pub rundir: Option<Spanned<String>>,
    // sip-options, tcp
    pub target: Option<Spanned<String>>,
    // sip-options
    pub transport: Option<Spanned<String>>,
    pub alive: Option<Spanned<Vec<Spanned<StatusSpec>>>>,
    // ami
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    // process
    pub pidfile: Option<Spanned<String>>,
}

impl RawCheck {
    /// The kind-specific keys that are present, with their spans, in the
    /// order they are declared above.
    pub fn present_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        fn s<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("name", s(&self.name)),
            ("timeout", s(&self.timeout)),
            ("command", s(&self.command)),
            ("rundir", s(&self.rundir)),
            ("target", s(&self.target)),
            ("transport", s(&self.transport)),
            ("alive", s(&self.alive)),
            ("host", s(&self.host)),
            ("port", s(&self.port)),
            ("user", s(&self.user)),
            ("secret", s(&self.secret)),
            ("pidfile", s(&self.pidfile)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .collect()
    }
}

/// An entry of a SIP check's `alive` list: `200` or `"200-299"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusSpec {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code like 200 or a range like \"200-299\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                Ok(StatusSpec::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                Ok(StatusSpec::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSpec, E> {
                Ok(StatusSpec::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[peer]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub dead_after: Option<Spanned<i64>>,
    pub witness: Option<Spanned<Vec<Spanned<String>>>>,
    pub paths: Option<Spanned<Vec<Spanned<String>>>>,
    pub sip_port: Option<Spanned<i64>>,
}

/// `[sync]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    pub interval: Option<Spanned<String>>,
    pub max_delete_percent: Option<Spanned<i64>>,
    pub trash_days: Option<Spanned<i64>>,
    #[serde(default)]
    pub path: Vec<Spanned<RawSyncPath>>,
    #[serde(default)]
    pub target: Vec<Spanned<RawSyncTarget>>,
}

/// One `[[sync.path]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncPath {
    pub path: Option<Spanned<String>>,
    pub exclude: Option<Spanned<Vec<Spanned<String>>>>,
    pub delete: Option<Spanned<bool>>,
    pub max_file_size: Option<Spanned<String>>,
    pub sqlite: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[sync.target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncTarget {
    pub path: Option<Spanned<String>>,
}

/// `[alert]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    pub email_to: Option<Spanned<Vec<Spanned<String>>>>,
    pub email_from: Option<Spanned<String>>,
    pub smtp: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub smtp_user: Option<Spanned<String>>,
    pub smtp_password: Option<Spanned<String>>,
    pub sendmail: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub digest_window: Option<Spanned<String>>,
    pub reminder: Option<Spanned<String>>,
    pub syslog_facility: Option<Spanned<String>>,
    #[serde(default)]
    pub snmp: Vec<Spanned<RawSnmp>>,
}

/// One `[[alert.snmp]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSnmp {
    pub host: Option<Spanned<String>>,
    pub community: Option<Spanned<String>>,
}

/// Deserializes `src` into a [`RawConfig`].
pub(crate) fn from_str(src: &str) -> Result<RawConfig, toml::de::Error> {
    toml::from_str(src)
}

/// `[hooks]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHooks {
    pub on_active: Option<Spanned<String>>,
    pub on_standby: Option<Spanned<String>>,
    pub on_disable: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}
