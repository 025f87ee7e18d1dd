//! When events become mail: the digest window and the reminder, as pure
//! functions over a small record, the [`Book`], that the alerter keeps in
//! `state_dir/alerts/pending.json` between rounds and passes.
//!
//! The rules, with `window` = `[alert] digest_window`:
//!
//! * An event opens a window if none is open, and waits in it. When the
//!   window is `window` old, every event in it goes out as **one** mail, in
//!   the order they happened ([`due`], [`close`]).
//! * An *urgent* event (takeover, release, manual failover, auto failback,
//!   split brain: the address moved or is held twice) closes the window at
//!   once, so the operator hears of a failover within a round, not a window
//!   later. Unless a mail went out less than `window` ago: then it waits in
//!   the window like any other event. So a link that flaps fifty times in a
//!   minute gives one mail at the first takeover and one digest a window
//!   later, not fifty mails ([`note`]).
//! * A zero window sends every event on its own, at once; a window that
//!   fills up ([`MAX_EVENTS`]) closes early.
//! * While the cluster is not normal, a "still degraded" reminder goes out
//!   every `[alert] reminder`, counted from when it stopped being normal
//!   (the event mail already said so at that moment) ([`remind`]).
//!
//! Time is milliseconds since the epoch, as in [`Event::at_ms`]. A clock
//! that jumps back never holds mail: a window that seems to have opened in
//! the future is due.

use serde::{Deserialize, Serialize};
use sip_ha_core::{Event, EventKind};
use std::time::Duration;

/// What the alerter remembers between rounds (and cron passes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Book {
    /// Events waiting for their mail, oldest first.
    pub events: Vec<Event>,
    /// When the open window started; `None`: no window is open.
    pub opened_ms: Option<u64>,
    /// When the last event mail was queued.
    pub last_mail_ms: Option<u64>,
    /// Since when the cluster has not been normal; `None` while it is.
    pub degraded_since_ms: Option<u64>,
    /// When the last reminder was queued (or, before the first, when the
    /// cluster stopped being normal).
    pub last_reminder_ms: Option<u64>,
    /// The `-v` screen as of the latest event, for a digest that closes in
    /// a later pass.
    pub screen: String,
    /// The last good sync line as of the latest event.
    pub last_sync: Option<String>,
}

/// A window closes early when it holds this many events, so a storm within
/// a long window makes several long mails rather than an unbounded file.
pub const MAX_EVENTS: usize = 500;

/// Events that mean the service address moved, or is held twice.
pub fn urgent(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Takeover
            | EventKind::Release
            | EventKind::ManualFailover
            | EventKind::AutoFailback
            | EventKind::SplitBrain
    )
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Put `ev`, seen at `now_ms`, in the window. True when the window must
/// close now (see the module docs).
pub fn note(book: &mut Book, ev: Event, now_ms: u64, window: Duration) -> bool {
    if book.opened_ms.is_none() || book.events.is_empty() {
        book.opened_ms = Some(now_ms);
    }
    let quiet = book
        .last_mail_ms
        .is_none_or(|t| now_ms < t || now_ms - t >= ms(window));
    let close_now = window.is_zero() || (urgent(ev.kind) && quiet);
    book.events.push(ev);
    close_now || book.events.len() >= MAX_EVENTS
}

/// Whether the open window has run its time at `now_ms`.
pub fn due(book: &Book, now_ms: u64, window: Duration) -> bool {
    match book.opened_ms {
        Some(opened) if !book.events.is_empty() => now_ms < opened || now_ms - opened >= ms(window),
        _ => false,
    }
}

/// Close the window: its events, oldest first, for one mail.
pub fn close(book: &mut Book, now_ms: u64) -> Vec<Event> {
    book.opened_ms = None;
    book.last_mail_ms = Some(now_ms);
    std::mem::take(&mut book.events)
}

/// Track whether the cluster is normal; `Some(since_ms)` when a "still
/// degraded since `since_ms`" reminder is due now. `every` is
/// `[alert] reminder` (`None`: off).
pub fn remind(book: &mut Book, normal: bool, now_ms: u64, every: Option<Duration>) -> Option<u64> {
    if normal {
        book.degraded_since_ms = None;
        book.last_reminder_ms = None;
        return None;
    }
    let since = *book.degraded_since_ms.get_or_insert(now_ms);
    let last = *book.last_reminder_ms.get_or_insert(now_ms);
    let every = every?;
    if now_ms < last || now_ms - last >= ms(every) {
        book.last_reminder_ms = Some(now_ms);
        Some(since)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ev(kind: EventKind, at_ms: u64) -> Event {
        Event {
            kind,
            reason: format!("{kind} at {at_ms}"),
            at_ms,
        }
    }

    /// Feed `events` (kind, at) and tick every second up to `until`; the
    /// mails that would go out, as (when, kinds).
    fn run(
        events: &[(EventKind, u64)],
        until: u64,
        window: Duration,
    ) -> Vec<(u64, Vec<EventKind>)> {
        let mut book = Book::default();
        let mut mails = Vec::new();
        let mut next = events.iter().peekable();
        let mut now = 0;
        while now <= until {
            while let Some(&&(kind, at)) = next.peek() {
                if at > now {
                    break;
                }
                next.next();
                if note(&mut book, ev(kind, at), at, window) {
                    let sent = close(&mut book, at);
                    mails.push((at, sent.iter().map(|e| e.kind).collect()));
                }
            }
            if due(&book, now, window) {
                let sent = close(&mut book, now);
                mails.push((now, sent.iter().map(|e| e.kind).collect()));
            }
            now += 1000;
        }
        mails
    }

    #[test]
    fn a_lone_takeover_is_mailed_at_once() {
        let mails = run(&[(EventKind::Takeover, 5_000)], 200_000, MIN);
        assert_eq!(mails, vec![(5_000, vec![EventKind::Takeover])]);
    }

    #[test]
    fn minor_events_wait_for_the_window_and_go_out_together() {
        let mails = run(
            &[
                (EventKind::PeerLost, 1_000),
                (EventKind::PeerBack, 3_000),
                (EventKind::PeerLost, 10_000),
            ],
            200_000,
            MIN,
        );
        assert_eq!(
            mails,
            vec![(
                61_000,
                vec![
                    EventKind::PeerLost,
                    EventKind::PeerBack,
                    EventKind::PeerLost
                ]
            )]
        );
    }

    #[test]
    fn a_flapping_link_gives_one_mail_then_one_digest_not_fifty() {
        // Takeover and release alternate every second for 50 s.
        let events: Vec<(EventKind, u64)> = (0..50)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    EventKind::Takeover
                } else {
                    EventKind::Release
                };
                (kind, 1_000 + i * 1_000)
            })
            .collect();
        let mails = run(&events, 300_000, MIN);
        assert_eq!(mails.len(), 2, "{mails:?}");
        assert_eq!(mails[0], (1_000, vec![EventKind::Takeover]));
        assert_eq!(mails[1].1.len(), 49, "every other event, in one digest");
        assert_eq!(mails[1].1[0], EventKind::Release);
    }

    #[test]
    fn an_urgent_event_closes_a_window_of_minor_ones_with_them_in_order() {
        let mails = run(
            &[(EventKind::PeerLost, 1_000), (EventKind::Takeover, 4_000)],
            200_000,
            MIN,
        );
        assert_eq!(
            mails,
            vec![(4_000, vec![EventKind::PeerLost, EventKind::Takeover])]
        );
    }

    #[test]
    fn an_urgent_event_a_window_after_the_last_mail_goes_at_once_again() {
        let mails = run(
            &[(EventKind::Takeover, 1_000), (EventKind::Release, 100_000)],
            300_000,
            MIN,
        );
        assert_eq!(
            mails,
            vec![
                (1_000, vec![EventKind::Takeover]),
                (100_000, vec![EventKind::Release])
            ]
        );
    }

    #[test]
    fn a_zero_window_mails_each_event_alone() {
        let mails = run(
            &[(EventKind::PeerLost, 1_000), (EventKind::PeerBack, 2_000)],
            10_000,
            Duration::ZERO,
        );
        assert_eq!(
            mails,
            vec![
                (1_000, vec![EventKind::PeerLost]),
                (2_000, vec![EventKind::PeerBack])
            ]
        );
    }

    #[test]
    fn a_storm_in_a_long_window_closes_it_at_the_cap() {
        let events: Vec<(EventKind, u64)> = (0..(MAX_EVENTS as u64 + 10))
            .map(|i| (EventKind::PeerLost, 1_000 + i))
            .collect();
        let mut book = Book::default();
        let hour = Duration::from_secs(3600);
        let mut mails = Vec::new();
        for (kind, at) in events {
            if note(&mut book, ev(kind, at), at, hour) {
                mails.push(close(&mut book, at).len());
            }
        }
        assert_eq!(mails, [MAX_EVENTS]);
        assert_eq!(book.events.len(), 10, "the rest wait in a new window");
    }

    #[test]
    fn a_clock_that_jumps_back_does_not_hold_mail() {
        let mut book = Book::default();
        assert!(!note(
            &mut book,
            ev(EventKind::PeerLost, 50_000),
            50_000,
            MIN
        ));
        assert!(!due(&book, 60_000, MIN));
        assert!(due(&book, 10_000, MIN), "opened in the future: due");
    }

    #[test]
    fn the_book_survives_a_restart_as_json() {
        let mut book = Book::default();
        note(&mut book, ev(EventKind::PeerLost, 1_000), 1_000, MIN);
        book.screen = "screen".into();
        let json = serde_json::to_string(&book).unwrap();
        let back: Book = serde_json::from_str(&json).unwrap();
        assert_eq!(back, book);
        // An older or partial file still reads.
        let partial: Book = serde_json::from_str("{\"opened_ms\": 5}").unwrap();
        assert_eq!(partial.opened_ms, Some(5));
    }

    #[test]
    fn reminders_come_every_period_while_degraded_and_stop_when_normal() {
        let hour = Some(Duration::from_secs(3600));
        let mut book = Book::default();
        let h = 3_600_000;
        assert_eq!(remind(&mut book, true, 0, hour), None);
        // Degraded at t=10s: the event mail said so; no reminder yet.
        assert_eq!(remind(&mut book, false, 10_000, hour), None);
        assert_eq!(remind(&mut book, false, 10_000 + h - 1, hour), None);
        assert_eq!(remind(&mut book, false, 10_000 + h, hour), Some(10_000));
        assert_eq!(remind(&mut book, false, 10_000 + h + 5_000, hour), None);
        assert_eq!(remind(&mut book, false, 10_000 + 2 * h, hour), Some(10_000));
        // Normal again, then degraded anew: the clock starts over.
        assert_eq!(remind(&mut book, true, 10_000 + 2 * h + 1, hour), None);
        assert_eq!(remind(&mut book, false, 3 * h, hour), None);
        assert_eq!(remind(&mut book, false, 4 * h - 1, hour), None);
        assert_eq!(remind(&mut book, false, 4 * h, hour), Some(3 * h));
    }

    #[test]
    fn reminders_off_means_none_ever() {
        let mut book = Book::default();
        for t in [0, 10 * 3_600_000, 100 * 3_600_000] {
            assert_eq!(remind(&mut book, false, t, None), None);
        }
        assert_eq!(book.degraded_since_ms, Some(0));
    }
}
