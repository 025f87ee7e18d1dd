//! The watching client: what a phone on the LAN would see of the service.
//!
//! [`Client::start`] starts a thread that joins the client namespace and
//! sends a SIP OPTIONS to the service address (10.77.N.100:5060, UDP) every
//! 50 ms, each with a fresh Call-ID and branch, recording for each request
//! when it was sent, when its reply came and which server sent it (the
//! `Server:` header). [`Client::stop`] ends it and returns the
//! [`ClientLog`]; [`Client::snapshot`] copies the log so far without
//! stopping, for [`Lab::wait_until`](super::Lab::wait_until) conditions.
//!
//! From the log: [`ClientLog::outages`] (runs of requests that got no
//! reply), [`ClientLog::last_answered_by`],
//! [`ClientLog::answered_by_both_at_once`] (a sign of split brain),
//! [`ClientLog::switches`] and [`ClientLog::summary`].
//!
//! A request counts as answered whenever its reply comes, however late; the
//! reply time is kept so a test can judge lateness itself. On stop the
//! client keeps listening for [`DRAIN`] after its last request, so the last
//! requests are not miscounted as lost; a snapshot leaves out requests sent
//! within [`DRAIN`] of it that have no reply yet (still in flight).

use super::sip::{self, Reply};
use crate::common::netns;
use sip_ha_core::Role;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between requests.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// How long a request may wait for its reply before a snapshot counts it,
/// and how long [`Client::stop`] listens after the last request.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Two switches of the answering server back and forth within this window
/// count as both servers answering at once.
pub const BOTH_WINDOW: Duration = Duration::from_secs(2);

/// One request and what came back.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its number, from 0; also its index in [`ClientLog::probes`].
    pub seq: usize,
    pub sent: Instant,
    /// The first final reply.
    pub reply: Option<Reply>,
    /// Any further replies to the same request (normally none: more than
    /// one means more than one server got it).
    pub more: Vec<Reply>,
}

impl Probe {
    /// Which servers answered this request.
    pub fn answered_by(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = Vec::new();
        for role in self
            .reply
            .iter()
            .chain(&self.more)
            .filter_map(|r| r.answered_by)
        {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        roles
    }
}

/// A run of consecutive requests without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the first unanswered request was sent.
    pub start: Instant,
    /// When the first answered request after it was sent; if none was
    /// ([`Outage::recovered`] false), one interval after the last request.
    pub end: Instant,
    pub duration: Duration,
    /// How many requests got no reply.
    pub lost: usize,
    /// Whether a request was answered again afterwards.
    pub recovered: bool,
}

/// The server answering changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// When the first reply from the new server arrived.
    pub at: Instant,
    pub from: Role,
    pub to: Role,
}

/// What the client saw. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClientLog {
    /// Every request, in the order sent.
    pub probes: Vec<Probe>,
    pub interval: Duration,
    /// Whether the client had stopped (all replies in), or this is a
    /// snapshot.
    pub complete: bool,
    /// When the log was taken.
    pub taken: Instant,
}

impl ClientLog {
    /// The requests whose fate is known: all of them once stopped; in a
    /// snapshot, those answered or sent more than [`DRAIN`] ago.
    pub fn settled(&self) -> &[Probe] {
        if self.complete {
            return &self.probes;
        }
        let cutoff = self.taken.checked_sub(DRAIN);
        let end = self
            .probes
            .iter()
            .rposition(|p| p.reply.is_some() || cutoff.is_some_and(|c| p.sent <= c))
            .map_or(0, |i| i + 1);
        &self.probes[..end]
    }

    /// How many requests were sent.
    pub fn sent(&self) -> usize {
        self.probes.len()
    }

    /// How many got a reply.
    pub fn answered(&self) -> usize {
        self.probes.iter().filter(|p| p.reply.is_some()).count()
    }

    /// How many `role` answered.
    pub fn answered_by(&self, role: Role) -> usize {
        self.probes
            .iter()
            .filter(|p| p.reply.as_ref().and_then(|r| r.answered_by) == Some(role))
            .count()
    }

    /// How many settled requests got no reply.
    pub fn lost(&self) -> usize {
        self.settled().iter().filter(|p| p.reply.is_none()).count()
    }

    /// The runs of settled requests that got no reply, in order.
    pub fn outages(&self) -> Vec<Outage> {
        let settled = self.settled();
        let mut out = Vec::new();
        let mut i = 0;
        while i < settled.len() {
            if settled[i].reply.is_some() {
                i += 1;
                continue;
            }
            let first = i;
            while i < settled.len() && settled[i].reply.is_none() {
                i += 1;
            }
            let start = settled[first].sent;
            let (end, recovered) = match settled.get(i) {
                Some(next) => (next.sent, true),
                None => (settled[i - 1].sent + self.interval, false),
            };
            out.push(Outage {
                start,
                end,
                duration: end.duration_since(start),
                lost: i - first,
                recovered,
            });
        }
        out
    }

    /// The longest of [`ClientLog::outages`].
    pub fn longest_outage(&self) -> Option<Outage> {
        self.outages().into_iter().max_by_key(|o| o.duration)
    }

    /// The outages that overlap `from..=to`.
    pub fn outages_between(&self, from: Instant, to: Instant) -> Vec<Outage> {
        self.outages()
            .into_iter()
            .filter(|o| o.end >= from && o.start <= to)
            .collect()
    }

    /// Every reply, in order of arrival, with who sent it.
    pub fn replies(&self) -> Vec<&Reply> {
        let mut replies: Vec<&Reply> = self
            .probes
            .iter()
            .flat_map(|p| p.reply.iter().chain(&p.more))
            .collect();
        replies.sort_by_key(|r| r.at);
        replies
    }

    /// The server that sent the latest reply.
    pub fn last_answered_by(&self) -> Option<Role> {
        self.replies().last().and_then(|r| r.answered_by)
    }

    /// When `role` first answered at or after `after`.
    pub fn first_answer_by(&self, role: Role, after: Instant) -> Option<Instant> {
        self.replies()
            .into_iter()
            .find(|r| r.at >= after && r.answered_by == Some(role))
            .map(|r| r.at)
    }

    /// Each change of the server answering, in order.
    pub fn switches(&self) -> Vec<Switch> {
        let mut out = Vec::new();
        let mut last: Option<Role> = None;
        for r in self.replies() {
            let Some(role) = r.answered_by else { continue };
            if let Some(from) = last {
                if from != role {
                    out.push(Switch {
                        at: r.at,
                        from,
                        to: role,
                    });
                }
            }
            last = Some(role);
        }
        out
    }

    /// Whether both servers served the address in the same stretch of
    /// time: one request answered by both, or the answering server
    /// switching there and back within [`BOTH_WINDOW`] (with both holding
    /// the address, the client's ARP entry follows whichever announced
    /// last, so answers flap).
    pub fn answered_by_both_at_once(&self) -> bool {
        if self.probes.iter().any(|p| p.answered_by().len() > 1) {
            return true;
        }
        self.switches()
            .windows(2)
            .any(|w| w[1].to == w[0].from && w[1].at.duration_since(w[0].at) < BOTH_WINDOW)
    }

    /// One line: requests, answers per server, losses, longest outage.
    pub fn summary(&self) -> String {
        let outages = self.outages();
        let longest = outages
            .iter()
            .map(|o| o.duration)
            .max()
            .map_or_else(|| "none".to_string(), |d| format!("{} ms", d.as_millis()));
        format!(
            "{} requests, {} answered (master {}, slave {}), {} lost in {} outage(s), longest {}",
            self.sent(),
            self.answered(),
            self.answered_by(Role::Master),
            self.answered_by(Role::Slave),
            self.lost(),
            outages.len(),
            longest
        )
    }

    /// Records the client's view on `timeline`: who answered first, each
    /// outage's start and end, each switch of server.
    pub fn mark_on(&self, timeline: &super::Timeline) {
        if let Some(first) = self.replies().first() {
            let who = first.answered_by.map_or("?", Role::as_str);
            timeline.mark_at(first.at, format!("client: answered by {who}"));
        }
        for o in self.outages() {
            timeline.mark_at(
                o.start,
                format!("client: no reply ({} requests lost)", o.lost),
            );
            if o.recovered {
                timeline.mark_at(
                    o.end,
                    format!("client: replies again after {} ms", o.duration.as_millis()),
                );
            }
        }
        for s in self.switches() {
            timeline.mark_at(
                s.at,
                format!("client: answered by {} (was {})", s.to, s.from),
            );
        }
    }
}

/// The watching client of a lab. Every method takes `&self`.
pub struct Client {
    ns: String,
    local: Ipv4Addr,
    target: SocketAddr,
    running: Mutex<Option<Running>>,
}

struct Running {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    probes: Mutex<Vec<Probe>>,
    stop: AtomicBool,
}

impl Shared {
    fn probes(&self) -> MutexGuard<'_, Vec<Probe>> {
        self.probes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Client {
    pub(crate) fn new(ns: String, local: Ipv4Addr, target: SocketAddr) -> Client {
        Client {
            ns,
            local,
            target,
            running: Mutex::new(None),
        }
    }

    /// Where the requests go: the service address, port 5060.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Starts watching with a new, empty log. Panics if already watching.
    pub fn start(&self) {
        let mut running = self.lock();
        assert!(running.is_none(), "the lab client is already running");
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let ns = self.ns.clone();
            let local = SocketAddr::from((self.local, 0));
            let target = self.target;
            std::thread::Builder::new()
                .name("lab-client".into())
                .spawn(move || watch(&ns, local, target, &shared))
                .expect("start the lab client thread")
        };
        *running = Some(Running { shared, thread });
    }

    /// Whether it is watching.
    pub fn is_running(&self) -> bool {
        self.lock().is_some()
    }

    /// The log so far, without stopping (see [`ClientLog::settled`]). Empty
    /// if not running.
    pub fn snapshot(&self) -> ClientLog {
        let probes = self
            .lock()
            .as_ref()
            .map(|r| r.shared.probes().clone())
            .unwrap_or_default();
        ClientLog {
            probes,
            interval: INTERVAL,
            complete: false,
            taken: Instant::now(),
        }
    }

    /// Stops watching (after waiting [`DRAIN`] for the last replies) and
    /// returns the whole log. Panics if it was not running, or if the
    /// client thread failed.
    pub fn stop(&self) -> ClientLog {
        match self.stop_quietly() {
            Some(Ok(log)) => log,
            Some(Err(e)) => panic!("the lab client failed: {e}"),
            None => panic!("the lab client is not running"),
        }
    }

    /// [`Client::stop`] without panicking: `None` if it was not running.
    pub(crate) fn stop_quietly(&self) -> Option<Result<ClientLog, String>> {
        let running = self.lock().take()?;
        running.shared.stop.store(true, Ordering::Relaxed);
        let joined = running.thread.join();
        let probes = running.shared.probes().clone();
        Some(match joined {
            Ok(()) => Ok(ClientLog {
                probes,
                interval: INTERVAL,
                complete: true,
                taken: Instant::now(),
            }),
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client thread: joins `ns`, then sends and listens until told to
/// stop, then listens [`DRAIN`] more.
fn watch(ns: &str, local: SocketAddr, target: SocketAddr, shared: &Shared) {
    netns::enter(ns);
    let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local} in {ns}: {e}"));
    let local = sock.local_addr().expect("the client socket's address");
    // Unconnected, so ICMP errors (host unreachable while nobody holds the
    // address) do not turn into send errors: those requests are just lost.
    let run = sip::token();
    let mut next = Instant::now();
    let mut stop_at: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if stop_at.is_none() && shared.stop.load(Ordering::Relaxed) {
            stop_at = Some(now + DRAIN);
        }
        if stop_at.is_some_and(|t| now >= t) {
            return;
        }
        if stop_at.is_none() && now >= next {
            let mut probes = shared.probes();
            let seq = probes.len();
            let call_id = format!("w-{run}-{seq}");
            let request = sip::options_request(target, local, &call_id);
            let _ = sock.send_to(request.as_bytes(), target);
            probes.push(Probe {
                seq,
                sent: now,
                reply: None,
                more: Vec::new(),
            });
            drop(probes);
            next += INTERVAL;
            if next < now {
                // Fell behind (a busy machine): skip, do not burst.
                next = now + INTERVAL;
            }
        }
        let wake = stop_at.unwrap_or(next);
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))
            .expect("set the client socket's timeout");
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => continue, // timeout, or an ICMP error: nothing to record
        };
        let at = Instant::now();
        let Some(parsed) = sip::parse_reply(&buf[..n]) else {
            continue;
        };
        if parsed.status < 200 {
            continue;
        }
        let Some(seq) = parsed
            .call_id
            .as_deref()
            .and_then(|c| c.strip_prefix(&format!("w-{run}-")))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        let reply = Reply {
            at,
            status: parsed.status,
            reason: parsed.reason,
            answered_by: parsed.server.as_deref().and_then(sip::role_of),
            server: parsed.server,
            from,
        };
        let mut probes = shared.probes();
        if let Some(probe) = probes.get_mut(seq) {
            if probe.reply.is_none() {
                probe.reply = Some(reply);
            } else {
                probe.more.push(reply);
            }
        }
    }
}
