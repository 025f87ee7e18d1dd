//! Delay, jitter and loss on a lab link without netem: [`Lab::jitter`].
//!
//! `tc qdisc ... netem delay 50ms 100ms loss 5%` is the usual way to make a
//! link slow and unreliable, but this project's kernels are built without
//! netem (`CONFIG_NET_SCH_NETEM`): `tc` answers "Specified qdisc kind is
//! unknown". They do have NFQUEUE, netfilter's way of handing packets to a
//! program that decides their fate, so the lab does netem's job itself:
//!
//! ```text
//!   node namespace                               test process
//!   +--------------------------------------+     +--------------------------------+
//!   | sshd, sip-ha, Kamailio send a packet |     | delayer thread (setns'd into   |
//!   |   -> OUTPUT hook, -o eth1            |     | the node's namespace)          |
//!   |   -> iptables: -j NFQUEUE --queue-num N ---> recv: packet id 17            |
//!   |      (the kernel keeps the packet,   |     |  5%: verdict DROP now          |
//!   |       userspace gets its metadata)   |     |  else: due = now + U[lo, hi]   |
//!   |                                      |     |        into a timer heap       |
//!   |   packet 17 leaves on eth1 <------------- when due: verdict ACCEPT id 17  |
//!   +--------------------------------------+     +--------------------------------+
//! ```
//!
//! * **The rule.** `iptables -A OUTPUT -o <iface> -j NFQUEUE --queue-num N
//!   --queue-bypass`, run inside the node's namespace. It is iptables' xt
//!   target, not nft's own `queue` statement: the kernel has
//!   `CONFIG_NETFILTER_XT_TARGET_NFQUEUE` and `CONFIG_NFT_COMPAT` but not
//!   `CONFIG_NFT_QUEUE`, and Debian's `iptables` (the nf_tables backend)
//!   loads xt targets through nft's compat layer. If that fails,
//!   `iptables-legacy` (same package) is tried. `--queue-bypass` lets
//!   packets through untouched while nobody listens on queue N: if the
//!   delayer thread dies, or the test process is killed, the link works
//!   again instead of going black. Queue numbers are per network namespace;
//!   the lab still gives every delayer of the process its own number, so
//!   one never meets another's queue.
//! * **The delayer.** A thread of the test process joins the node's
//!   namespace (`setns`, see `common::netns::enter`) *before* opening the
//!   netlink socket, since a netlink socket belongs to the namespace it is
//!   opened in. It binds queue N with the [`nfq`] crate, asking for metadata
//!   only (the verdict needs just the packet id), and then loops: read every
//!   queued packet, drop `loss_percent` % of them at once (netem too drops
//!   on the way in), give each other one a due time `now + d`, with `d`
//!   uniform in `[delay - jitter, delay + jitter]` and clamped at 0, keep it
//!   in a min-heap by due time, and give ACCEPT to each as it falls due.
//!   NFQUEUE takes verdicts in any order (by packet id), so a packet drawn
//!   a short delay overtakes one drawn a long delay: packets are reordered,
//!   exactly as with netem's `delay 50ms 100ms` (which also draws uniformly
//!   in `[mu - sigma, mu + sigma]` when no distribution is given, and sends
//!   packets whose time is in the past at once).
//! * **What `50 ms ± 100 ms` means then.** A quarter of the packets (those
//!   drawn in [-50, 0) ms) go at once, the rest spread evenly over 0..150
//!   ms: median 50 ms, 10th percentile 0, 90th percentile 130 ms.
//! * **Bounds.** The kernel holds at most [`HELD_LIMIT`] packets for queue
//!   N (netem's default `limit` too) and drops newer ones beyond that, so
//!   the heap never grows past it either. The nfq socket has no file
//!   descriptor to wait on, so the thread reads without blocking and
//!   naps at most [`TICK`] between rounds: due times are kept to about a
//!   millisecond, and an idle delayer costs a wake-up per millisecond.
//! * **Teardown** ([`Lab::clear_jitter`], [`Lab::clear_netem`], dropping the
//!   [`Lab`]): the rule is deleted first, so no new packet is queued; then
//!   the thread passes (ACCEPT) what it still holds, late or not, and what
//!   is still queued, and exits, closing the socket.
//!
//! What it does not do: only IPv4 passes `iptables` (the lab is IPv4; ARP
//! and IPv6 go undelayed, as they do not cross the IPv4 OUTPUT hook), and
//! only what the node *sends* on the interface is impaired, like netem on
//! the interface's root qdisc. To impair both directions, impair both ends:
//!
//! ```ignore
//! let spec = JitterSpec::new(Duration::from_millis(50), Duration::from_millis(100), 5);
//! for role in [Role::Master, Role::Slave] {
//!     lab.jitter(role, lab::MGMT_IF, spec);
//! }
//! // ... later, or just drop the lab:
//! let stats = lab.clear_jitter(Role::Master, lab::MGMT_IF);
//! ```
//!
//! [`Lab::netem`] sends a netem spec that needs more than loss (`"delay
//! 50ms 100ms loss 5%"`) here when the kernel has no netem; see
//! [`JitterSpec::from_netem`] for what it understands.

use super::{Lab, Role, SETUP_TIMEOUT};
use crate::common::netns;
use nfq::{Message, Queue, Verdict};
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most packets the kernel holds for one delayer (netem's default
/// `limit`); newer packets beyond it are dropped, as netem drops them.
pub const HELD_LIMIT: u32 = 1000;

/// The delayer's longest nap between two looks at its queue and its heap:
/// the precision of the delays.
pub const TICK: Duration = Duration::from_millis(1);

/// The iptables commands tried, in order, to add the NFQUEUE rule.
const IPTABLES: [&str; 2] = ["iptables", "iptables-legacy"];

/// Queue numbers handed out to delayers: one each, within the process.
const FIRST_QUEUE: u32 = 0x5100;
static NEXT_QUEUE: AtomicU32 = AtomicU32::new(0);

/// What [`Lab::jitter`] does to each packet a node sends on an interface:
/// drop it with probability `loss_percent` %, else hold it for a delay
/// drawn uniformly in `[delay - jitter, delay + jitter]`, clamped at 0
/// (netem's `delay DELAY JITTER loss LOSS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterSpec {
    pub delay: Duration,
    pub jitter: Duration,
    /// 0 to 100.
    pub loss_percent: u32,
}

impl JitterSpec {
    pub fn new(delay: Duration, jitter: Duration, loss_percent: u32) -> JitterSpec {
        JitterSpec {
            delay,
            jitter,
            loss_percent,
        }
    }

    /// The shortest delay a packet can get: `delay - jitter`, at least 0.
    pub fn min_delay(&self) -> Duration {
        self.delay.saturating_sub(self.jitter)
    }

    /// The longest delay a packet can get: `delay + jitter`.
    pub fn max_delay(&self) -> Duration {
        self.delay + self.jitter
    }

    /// Whether it only drops (no delay): nftables alone does that
    /// ([`Lab::loss`]), without a thread.
    pub fn is_loss_only(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero()
    }

    /// Reads the part of a netem spec that this module can emulate:
    ///
    /// * `delay TIME [JITTER]`: times as `tc` writes them (`50ms`, `1s`,
    ///   `1.5ms`, `200us`; a bare number is microseconds, as in `tc`);
    /// * `loss [random] P%`: a whole percentage (`5%` or `5`).
    ///
    /// Anything else (a delay correlation or distribution, `reorder`,
    /// `duplicate`, `corrupt`, `rate`, `limit`, a fractional loss) is
    /// refused, saying what.
    pub fn from_netem(spec: &str) -> Result<JitterSpec, String> {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let mut out = JitterSpec::default();
        let mut i = 0;
        while i < words.len() {
            match words[i] {
                "delay" => {
                    let time = words.get(i + 1).ok_or("\"delay\" without a time")?;
                    out.delay = parse_time(time)?;
                    i += 2;
                    if let Some(jitter) = words.get(i).and_then(|w| parse_time(w).ok()) {
                        out.jitter = jitter;
                        i += 1;
                        if words.get(i).is_some_and(|w| w.ends_with('%')) {
                            return Err(format!(
                                "a delay correlation ({}) is not emulated",
                                words[i]
                            ));
                        }
                    }
                }
                "loss" => {
                    i += 1;
                    if words.get(i) == Some(&"random") {
                        i += 1;
                    }
                    let percent = words.get(i).ok_or("\"loss\" without a percentage")?;
                    out.loss_percent = parse_percent(percent)?;
                    i += 1;
                    if words.get(i).is_some_and(|w| w.ends_with('%')) {
                        return Err(format!("a loss correlation ({}) is not emulated", words[i]));
                    }
                }
                other => return Err(format!("netem's {other:?} is not emulated")),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for JitterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay {:?} ± {:?}, loss {}%",
            self.delay, self.jitter, self.loss_percent
        )
    }
}

/// `50ms`, `1s`, `1.5ms`, `200us`, `300` (µs, as in tc).
fn parse_time(word: &str) -> Result<Duration, String> {
    let split = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{word:?} is not a time"))?;
    let scale = match unit {
        "s" | "sec" | "secs" => 1.0,
        "ms" | "msec" | "msecs" => 1e-3,
        "" | "us" | "usec" | "usecs" => 1e-6,
        _ => return Err(format!("{word:?}: unknown time unit {unit:?}")),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|e| format!("{word:?}: {e}"))
}

/// `5%` or `5`: a whole percentage, 0 to 100.
fn parse_percent(word: &str) -> Result<u32, String> {
    let number = word.strip_suffix('%').unwrap_or(word);
    match number.parse::<u32>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!(
            "loss {word:?}: only a whole percentage, 0 to 100, is emulated"
        )),
    }
}

/// What one delayer did, from [`Lab::clear_jitter`].
#[derive(Debug, Clone, Default)]
pub struct JitterStats {
    /// Packets it read from its queue.
    pub queued: u64,
    /// Of those, dropped on purpose (the loss).
    pub dropped: u64,
    /// Of those, passed on teardown before they were due.
    pub released_early: u64,
    /// The most packets it held at once.
    pub max_held: usize,
    /// Errors from netlink, e.g. for a verdict on a packet the kernel had
    /// already dropped because the interface went down; and the last one.
    pub errors: u64,
    pub last_error: Option<String>,
}

impl fmt::Display for JitterStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets queued, {} dropped, at most {} held at once",
            self.queued, self.dropped, self.max_held
        )?;
        if self.errors > 0 {
            write!(
                f,
                ", {} netlink errors (last: {})",
                self.errors,
                self.last_error.as_deref().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}

/// The delayers of one lab, by namespace and interface.
#[derive(Default)]
pub(crate) struct Jitters(Mutex<HashMap<(String, String), Delayer>>);

impl Jitters {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Delayer>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Lab {
    /// Impairs what `role`'s server sends on `iface`: `spec.loss_percent` %
    /// of its IPv4 packets dropped, the others held for a random delay in
    /// `[delay - jitter, delay + jitter]` (at least 0), so they may be
    /// reordered. Works without netem (see the module `lab::jitter`).
    /// Replaces an earlier [`Lab::jitter`] there; [`Lab::loss`] on the
    /// same interface stays and adds its own loss. Panics if it cannot be
    /// set up (no iptables: `scripts/install-test-deps.sh`).
    pub fn jitter(&self, role: Role, iface: &str, spec: JitterSpec) {
        assert!(spec.loss_percent <= 100, "loss of {}%?", spec.loss_percent);
        let _ = self.clear_jitter(role, iface);
        let ns = self.node(role).ns();
        let delayer = Delayer::start(ns, iface, spec);
        self.jitters
            .lock()
            .insert((ns.to_string(), iface.to_string()), delayer);
    }

    /// Removes [`Lab::jitter`] from `iface`: deletes the rule, passes the
    /// packets still held and stops the thread. What the delayer did, or
    /// `None` if there was none. Panics if the delayer thread had died.
    pub fn clear_jitter(&self, role: Role, iface: &str) -> Option<JitterStats> {
        let ns = self.node(role).ns();
        let delayer = self
            .jitters
            .lock()
            .remove(&(ns.to_string(), iface.to_string()))?;
        Some(
            delayer
                .stop()
                .unwrap_or_else(|e| panic!("the delayer on {iface} in {ns}: {e}")),
        )
    }

    /// Stops every delayer of the lab (on drop): never panics.
    pub(super) fn clear_all_jitter(&self) {
        let delayers: Vec<Delayer> = self.jitters.lock().drain().map(|(_, d)| d).collect();
        for delayer in delayers {
            let (ns, iface) = (delayer.ns.clone(), delayer.iface.clone());
            if let Err(e) = delayer.stop() {
                eprintln!("lab: the delayer on {iface} in {ns}: {e}");
            }
        }
    }
}

/// One NFQUEUE rule and the thread that serves its queue.
struct Delayer {
    ns: String,
    iface: String,
    queue: u16,
    /// The iptables command that added the rule; `None` once deleted.
    iptables: Option<&'static str>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<JitterStats>>,
}

impl Delayer {
    /// Starts the thread, waits until it has bound its queue, then adds the
    /// rule. Panics, having undone what it did, if any step fails.
    fn start(ns: &str, iface: &str, spec: JitterSpec) -> Delayer {
        let n = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
        let queue = u16::try_from(FIRST_QUEUE + n % 0x1000).expect("a queue number fits u16");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("lab-jitter-{queue}"))
            .spawn({
                let (ns, stop) = (ns.to_string(), Arc::clone(&stop));
                move || serve(&ns, queue, spec, &stop, &ready_tx)
            })
            .expect("spawn the delayer thread");
        // From here on, Drop stops the thread (and deletes the rule once
        // added).
        let mut delayer = Delayer {
            ns: ns.to_string(),
            iface: iface.to_string(),
            queue,
            iptables: None,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the delayer for {iface} in {ns} cannot bind queue {queue}: {e}"),
            Err(e) => panic!("the delayer for {iface} in {ns} did not start ({e}); see above"),
        }
        delayer.iptables = Some(add_rule(ns, iface, queue));
        delayer
    }

    /// Deletes the rule, then stops the thread; what it did.
    fn stop(mut self) -> Result<JitterStats, String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<JitterStats, String> {
        let mut problems = Vec::new();
        if let Some(iptables) = self.iptables.take() {
            let args = rule_args("-D", &self.iface, self.queue);
            if let Err(e) = iptables_in(&self.ns, iptables, &args) {
                // The namespace may be gone already, and the rule with it.
                problems.push(format!("deleting the rule: {e}"));
            }
        }
        self.stop.store(true, Ordering::Release);
        let stats = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => Some(stats),
            Some(Err(_)) => {
                problems.push("the delayer thread panicked (see above)".to_string());
                None
            }
            None => None,
        };
        match stats {
            Some(stats) if problems.is_empty() => Ok(stats),
            _ => Err(problems.join("; ")),
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.shutdown() {
                eprintln!("lab: the delayer on {} in {}: {e}", self.iface, self.ns);
            }
        }
    }
}

/// `iptables <op> OUTPUT -o <iface> -j NFQUEUE --queue-num N --queue-bypass`.
fn rule_args(op: &str, iface: &str, queue: u16) -> Vec<String> {
    let queue = queue.to_string();
    [
        "-w",
        op,
        "OUTPUT",
        "-o",
        iface,
        "-j",
        "NFQUEUE",
        "--queue-num",
        &queue,
        "--queue-bypass",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Adds the rule with the first of [`IPTABLES`] that can; which one did.
fn add_rule(ns: &str, iface: &str, queue: u16) -> &'static str {
    let args = rule_args("-A", iface, queue);
    let mut errors = Vec::new();
    for iptables in IPTABLES {
        match iptables_in(ns, iptables, &args) {
            Ok(()) => return iptables,
            Err(e) => errors.push(e),
        }
    }
    panic!(
        "cannot queue what {ns} sends on {iface} to the delayer (iptables installed? \
         scripts/install-test-deps.sh): {}",
        errors.join("; ")
    )
}

/// `ip netns exec <ns> <iptables> args...`.
fn iptables_in(ns: &str, iptables: &str, args: &[String]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, iptables])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {iptables}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{iptables} {} in {ns}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The delayer thread: joins `ns`, binds queue `queue_num`, says so on
/// `ready`, and delays until `stop`; then passes what it holds.
fn serve(
    ns: &str,
    queue_num: u16,
    spec: JitterSpec,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), String>>,
) -> JitterStats {
    netns::enter(ns);
    let queue = match open_queue(queue_num) {
        Ok(queue) => queue,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return JitterStats::default();
        }
    };
    let _ = ready.send(Ok(()));
    let mut delay = Delay::new(queue, spec);
    while !stop.load(Ordering::Acquire) {
        delay.take_new();
        let now = Instant::now();
        delay.release_due(now);
        let nap = delay
            .next_due()
            .map_or(TICK, |due| due.saturating_duration_since(now).min(TICK));
        std::thread::sleep(nap);
    }
    // The rule is gone: nothing new comes. Pass whatever is left.
    delay.take_new();
    delay.release_all();
    let _ = delay.queue.unbind(queue_num);
    delay.stats
}

/// Opens the netfilter queue socket in the calling thread's namespace and
/// binds `num`: metadata only, [`HELD_LIMIT`] packets at most (then the
/// kernel drops), reading without blocking.
fn open_queue(num: u16) -> std::io::Result<Queue> {
    let mut queue = Queue::open()?;
    queue.bind(num)?;
    queue.set_copy_range(num, 0)?;
    queue.set_queue_max_len(num, HELD_LIMIT)?;
    queue.set_fail_open(num, false)?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A packet held until `due`; `seq` keeps equal due times in arrival order.
struct Held {
    due: Instant,
    seq: u64,
    message: Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed: [`BinaryHeap`] is a max-heap, and the earliest due time
    /// must come out first.
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The delayer's state: its queue, the held packets, its dice.
struct Delay {
    queue: Queue,
    spec: JitterSpec,
    held: BinaryHeap<Held>,
    seq: u64,
    rng: SplitMix64,
    stats: JitterStats,
}

impl Delay {
    fn new(queue: Queue, spec: JitterSpec) -> Delay {
        Delay {
            queue,
            spec,
            held: BinaryHeap::new(),
            seq: 0,
            rng: SplitMix64::seeded(),
            stats: JitterStats::default(),
        }
    }

    /// Reads every packet queued so far: drops its share at once, holds
    /// the others with a due time.
    fn take_new(&mut self) {
        loop {
            match self.queue.recv() {
                Ok(message) => {
                    self.stats.queued += 1;
                    if self.rng.below(100) < u64::from(self.spec.loss_percent) {
                        self.stats.dropped += 1;
                        self.verdict(message, Verdict::Drop);
                    } else {
                        let due = Instant::now() + self.draw_delay();
                        self.seq += 1;
                        self.held.push(Held {
                            due,
                            seq: self.seq,
                            message,
                        });
                        self.stats.max_held = self.stats.max_held.max(self.held.len());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An error reply to an earlier verdict (the packet was
                    // flushed, e.g. the interface went down): note it and
                    // carry on.
                    self.error(&e);
                    return;
                }
            }
        }
    }

    /// A delay uniform in `[delay - jitter, delay + jitter]`, clamped at 0.
    fn draw_delay(&mut self) -> Duration {
        let micros = |d: Duration| i128::try_from(d.as_micros()).unwrap_or(i128::MAX);
        let (delay, jitter) = (micros(self.spec.delay), micros(self.spec.jitter));
        if jitter == 0 {
            return self.spec.delay;
        }
        let span = u64::try_from(2 * jitter + 1).unwrap_or(u64::MAX);
        let drawn = delay - jitter + i128::from(self.rng.below(span));
        Duration::from_micros(u64::try_from(drawn.max(0)).unwrap_or(u64::MAX))
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|h| h.due)
    }

    /// Passes every held packet due by `now`.
    fn release_due(&mut self, now: Instant) {
        while self.held.peek().is_some_and(|h| h.due <= now) {
            let held = self.held.pop().expect("peeked");
            self.verdict(held.message, Verdict::Accept);
        }
    }

    /// Passes every held packet, due or not (teardown).
    fn release_all(&mut self) {
        let now = Instant::now();
        while let Some(held) = self.held.pop() {
            if held.due > now {
                self.stats.released_early += 1;
            }
            self.verdict(held.message, Verdict::Accept);
        }
    }

    fn verdict(&mut self, mut message: Message, verdict: Verdict) {
        message.set_verdict(verdict);
        if let Err(e) = self.queue.verdict(message) {
            self.error(&e);
        }
    }

    fn error(&mut self, e: &std::io::Error) {
        self.stats.errors += 1;
        self.stats.last_error = Some(e.to_string());
    }
}

/// A small, fast pseudo-random generator (SplitMix64), seeded from the
/// system: plenty for drawing delays and losses.
struct SplitMix64(u64);

impl SplitMix64 {
    fn seeded() -> SplitMix64 {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            nanos as u64 ^ u64::from(std::process::id())
        });
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below
    /// n / 2^64).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}
