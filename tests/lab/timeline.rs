//! What happened when: a list of `(Instant, text)` a test, the lab and the
//! README demo push to ("fault injected", "address moved", "first good
//! reply") and print as offsets from the first event.
//!
//! ```text
//!   +0.000s  lab ready
//!   +2.113s  master powered off
//!   +3.402s  client: no reply since +2.150s
//!   +4.871s  client: answered by slave
//! ```

use std::sync::Mutex;
use std::time::Instant;

/// The event recorder. Shared by reference; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<Vec<(Instant, String)>>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Records `what` now; returns the instant recorded.
    pub fn mark(&self, what: impl Into<String>) -> Instant {
        let now = Instant::now();
        self.mark_at(now, what);
        now
    }

    /// Records `what` at `at` (measured earlier, e.g. by the client).
    pub fn mark_at(&self, at: Instant, what: impl Into<String>) {
        self.lock().push((at, what.into()));
    }

    /// The events in time order.
    pub fn events(&self) -> Vec<(Instant, String)> {
        let mut events = self.lock().clone();
        events.sort_by_key(|(at, _)| *at);
        events
    }

    /// When the first event with `text` in it happened.
    pub fn find(&self, text: &str) -> Option<Instant> {
        self.events()
            .into_iter()
            .find(|(_, what)| what.contains(text))
            .map(|(at, _)| at)
    }

    /// One line per event: `+S.mmms  what`, from the first event.
    pub fn render(&self) -> String {
        let events = self.events();
        let Some(&(origin, _)) = events.first() else {
            return String::from("  (no events)\n");
        };
        events
            .iter()
            .map(|(at, what)| {
                let offset = at.duration_since(origin);
                format!(
                    "  +{:>3}.{:03}s  {what}\n",
                    offset.as_secs(),
                    offset.subsec_millis()
                )
            })
            .collect()
    }

    /// Prints [`Timeline::render`] to stderr (shown with `--nocapture`, or
    /// when the test fails).
    pub fn print(&self) {
        eprint!("{}", self.render());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, String)>> {
        // A panic while pushing cannot leave the Vec inconsistent.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}
