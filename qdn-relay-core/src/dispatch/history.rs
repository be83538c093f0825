//! Keeping a dispatch's record small: its oldest thread entries, settled
//! legs and events move out of the record into [`HistoryPage`]s, which the
//! store writes beside it in the same save and never changes again. The
//! record keeps counts ([`History`]) so every index stays what it was: a
//! leg's index and a thread entry's position are the same before and after
//! a move.
//!
//! What moves, after every change (see [`Dispatch::move_out`]):
//!
//! - thread entries, oldest first, once the thread holds more than
//!   [`HIGH_ENTRIES`] entries or [`HIGH_BYTES`] of text, until it holds at
//!   most [`LOW_ENTRIES`] and [`LOW_BYTES`];
//! - legs the same way, but only a run of the oldest that can no longer
//!   change what the relay does: not waiting in the outbox, and not a
//!   forward of the current step of an open dispatch (a late delivery
//!   report for a moved leg changes nothing);
//! - events once there are more than [`crate::MAX_KEPT_EVENTS`], down to
//!   half of it;
//! - none of them past what the dispatch's job has not recorded yet (the
//!   job-sync cursor), while it has a job, and nothing before the job
//!   system said which job it belongs to.
//!
//! A moved inbound text still deduplicates (stores keep its message id in
//! their lookups), and the status JSON and the console show moved entries
//! with the rest ([`Dispatch::status_with`]).

use serde::{Deserialize, Serialize};

use super::Dispatch;
use crate::event::RelayEvent;
use crate::input::DeliveryStatus;
use crate::record::{Leg, Purpose, State, ThreadEntry};
use crate::types::{PhoneNumber, ProviderMessageId, Timestamp};

/// Thread entries (or legs) kept in the record before the oldest move out.
pub const HIGH_ENTRIES: usize = 96;
/// What a move leaves in the record, at most.
pub const LOW_ENTRIES: usize = 64;
/// Text (bytes of bodies and media addresses) kept in the thread (or the
/// legs) before the oldest move out.
pub const HIGH_BYTES: usize = 96 * 1024;
/// What a move leaves in the record, at most.
pub const LOW_BYTES: usize = 64 * 1024;

/// What moved out of a dispatch's record, as counts (so indexes stay
/// stable) and the little the relay still needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Pages written so far (the next page's [`HistoryPage::seq`]).
    #[serde(default)]
    pub pages: u32,
    /// Thread entries moved out: the first kept entry's position.
    #[serde(default)]
    pub thread: u32,
    /// Legs moved out: the first kept leg's index.
    #[serde(default)]
    pub legs: u32,
    /// Events moved out.
    #[serde(default)]
    pub events: u32,
    /// Of the moved thread entries: the customer's texts (an escalation
    /// says how many texts there were in all).
    #[serde(default)]
    pub customer_texts: u32,
    /// Of the moved legs: each dispatcher texted about the dispatch
    /// (forwards and follow-ups), with the last time, in first-texted
    /// order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<(PhoneNumber, Timestamp)>,
    /// The customer's first text, once it moved out (the status JSON's
    /// `message_id` and `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_text: Option<(ProviderMessageId, String)>,
    /// Of the moved legs: the first forward to the primary level, and the
    /// first past it (the status JSON's forward times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_forward_at: Option<Timestamp>,
    /// See [`History::primary_forward_at`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_forward_at: Option<Timestamp>,
}

/// Entries that moved out of a dispatch's record in one change, in order.
/// A store writes it with the save that moved them, keyed by the
/// dispatch and `seq`, and never changes it; writing the same page again
/// writes the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Its number in the dispatch, from 0.
    pub seq: u32,
    /// The position of its first thread entry.
    pub thread_from: u32,
    /// Thread entries, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread: Vec<ThreadEntry>,
    /// Legs, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<Leg>,
    /// Events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<RelayEvent>,
}

impl HistoryPage {
    /// Inbound message ids of its thread entries.
    pub fn inbound_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.thread.iter().filter_map(|e| e.sid.as_ref())
    }
    /// Provider ids of its legs.
    pub fn leg_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.legs.iter().filter_map(|l| l.sid.as_ref())
    }
}

/// Pages moved out and not saved yet. Not part of the dispatch's state: it
/// is never serialized, and two dispatches compare equal whatever their
/// unsaved pages. Boxed: most dispatches never move anything out, and a
/// pointer is a third of an empty `Vec` in every dispatch a store holds.
#[derive(Debug, Clone, Default)]
#[expect(clippy::box_collection, reason = "8 bytes in the dispatch, not 24")]
pub(super) struct Unsaved(Option<Box<Vec<HistoryPage>>>);

impl PartialEq for Unsaved {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Unsaved {}

fn entry_bytes(e: &ThreadEntry) -> usize {
    e.body.len() + e.media.iter().map(|m| m.url.len() + 16).sum::<usize>() + 96
}

fn leg_bytes(l: &Leg) -> usize {
    l.body.len() + 160
}

/// How many of `sizes` (oldest first) to move so that at most
/// [`LOW_ENTRIES`] and [`LOW_BYTES`] stay, once they pass the high marks;
/// `0` while under them.
fn how_many(sizes: impl ExactSizeIterator<Item = usize> + Clone) -> usize {
    let count = sizes.len();
    let bytes: usize = sizes.clone().sum();
    if count <= HIGH_ENTRIES && bytes <= HIGH_BYTES {
        return 0;
    }
    let mut n = count.saturating_sub(LOW_ENTRIES);
    let mut left: usize = sizes.clone().skip(n).sum();
    for s in sizes.skip(n) {
        if left <= LOW_BYTES {
            break;
        }
        left -= s;
        n += 1;
    }
    n
}

impl Dispatch {
    /// What moved out of the record so far.
    pub fn history(&self) -> &History {
        static NOTHING: History = History {
            pages: 0,
            thread: 0,
            legs: 0,
            events: 0,
            customer_texts: 0,
            notified: Vec::new(),
            first_text: None,
            primary_forward_at: None,
            backup_forward_at: None,
        };
        self.history.as_deref().unwrap_or(&NOTHING)
    }

    /// Pages moved out since the dispatch was last saved: the store writes
    /// them with the record, in the same transaction.
    pub fn unsaved_pages(&self) -> &[HistoryPage] {
        self.unsaved.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Forgets the unsaved pages once a save wrote them (the driver calls
    /// it after every save). Writing them again would be harmless: a page
    /// never changes.
    pub fn pages_saved(&mut self) {
        self.unsaved.0 = None;
    }

    /// The position of leg `index` in [`Dispatch::legs`]: `Ok(None)` if it
    /// moved out of the record, an error if there is no such leg.
    pub(super) fn leg_pos(&self, index: u32) -> Result<Option<usize>, super::InputError> {
        match index.checked_sub(self.history().legs) {
            None => Ok(None),
            Some(p) if (p as usize) < self.legs.len() => Ok(Some(p as usize)),
            Some(_) => Err(super::InputError::UnknownLeg(index)),
        }
    }

    /// The index the next leg gets.
    pub(super) fn next_leg_index(&self) -> u32 {
        self.history().legs + self.legs.len() as u32
    }

    /// The position the next thread entry gets.
    pub(super) fn next_thread_pos(&self) -> u32 {
        self.history().thread + self.thread.len() as u32
    }

    /// Moves the oldest entries out of the record once it grew past the
    /// marks (see the module's docs), as one unsaved page.
    pub(super) fn move_out(&mut self) {
        // What the job system is still owed stays: all of it until the
        // job system said which job the dispatch belongs to.
        let (thread_limit, legs_limit) = match self.job_sync.as_deref() {
            Some(js) if !js.resolved => (0, 0),
            Some(js) if self.job_id.is_some() => (
                js.thread.saturating_sub(self.history().thread) as usize,
                js.legs.saturating_sub(self.history().legs) as usize,
            ),
            _ => (usize::MAX, usize::MAX),
        };
        let threads = how_many(self.thread.iter().map(entry_bytes)).min(thread_limit);
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let open = self.state == State::Open;
        let settled = self
            .legs
            .iter()
            .take_while(|l| {
                l.status != DeliveryStatus::Pending
                    && l.retry_at.is_none()
                    && !(open && l.purpose == current)
            })
            .count();
        let legs = how_many(self.legs.iter().map(leg_bytes))
            .min(settled)
            .min(legs_limit);
        let events = if self.events.len() > crate::MAX_KEPT_EVENTS {
            self.events.len() - crate::MAX_KEPT_EVENTS / 2
        } else {
            0
        };
        if threads == 0 && legs == 0 && events == 0 {
            return;
        }
        let page = HistoryPage {
            seq: self.history().pages,
            thread_from: self.history().thread,
            thread: self.thread.drain(..threads).collect(),
            legs: self.legs.drain(..legs).collect(),
            events: self.events.drain(..events).collect(),
        };
        let mut customer_texts = page.thread.iter().filter(|e| self.is_customer_text(e));
        let first = customer_texts.next();
        let first_text = first.and_then(|e| Some((e.sid.clone()?, e.body.clone())));
        let customer_texts = u32::from(first.is_some()) + customer_texts.count() as u32;
        let h = self.history.get_or_insert_with(Box::default);
        h.pages += 1;
        h.thread += page.thread.len() as u32;
        h.legs += page.legs.len() as u32;
        h.events += page.events.len() as u32;
        h.customer_texts += customer_texts;
        if h.first_text.is_none() {
            h.first_text = first_text;
        }
        for l in &page.legs {
            if let Purpose::Forward { round, level } = l.purpose {
                let at = if (round, level) == (0, 0) {
                    &mut h.primary_forward_at
                } else {
                    &mut h.backup_forward_at
                };
                if at.is_none_or(|t| l.created_at < t) {
                    *at = Some(l.created_at);
                }
            }
            super::note_notified(&mut h.notified, l);
        }
        self.unsaved.0.get_or_insert_default().push(page);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, opened};
    use super::how_many;
    use crate::event::Effect;
    use crate::input::{InboundText, Input};

    /// A customer who texted more than a record keeps: the next level's
    /// forward says how many texts there were in all, and sends the
    /// latest (as many as fit).
    #[test]
    fn an_escalation_counts_the_texts_that_moved_out() {
        let mut d = opened(Duration::from_secs(600));
        for i in 0..150 {
            let text = InboundText {
                sid: format!("SMmore{i}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                from: d.customer(),
                to: d.line(),
                body: format!("t{i}"),
                media: Vec::new(),
            };
            d.handle(T0.plus(Duration::from_secs(1)), Input::CustomerText(text))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(d.history().customer_texts > 0, "texts moved out");
        let kept = d.thread().len();
        let fx = d
            .handle(T0.plus(Duration::from_secs(601)), Input::Timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        let body = fx
            .iter()
            .find_map(|e| match e {
                Effect::Send(m) if m.to != d.customer() && m.body.contains("texts") => {
                    Some(m.body.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("the backup's forward: {fx:?}"));
        assert!(
            body.contains(&format!("(151 texts; the last {kept}): ")),
            "{body}"
        );
        assert!(
            !body.contains(" t0 "),
            "the oldest are not repeated: {body}"
        );
    }

    #[test]
    fn nothing_moves_under_the_high_marks() {
        assert_eq!(how_many(std::iter::repeat_n(100, 96)), 0);
        assert_eq!(how_many(std::iter::repeat_n(1000, 90)), 0);
    }

    #[test]
    fn a_move_leaves_the_low_marks() {
        // By count: 97 small entries leave 64.
        assert_eq!(how_many(std::iter::repeat_n(100, 97)), 33);
        // By bytes: 10 entries of 10 KiB leave what fits in 64 KiB.
        let n = how_many(std::iter::repeat_n(10 * 1024, 10));
        assert_eq!(n, 4);
    }
}
