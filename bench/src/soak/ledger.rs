//! The books of the soak: what each source sent on its channel (and whether a node accepted
//! it, with which `seq`), what each subscriber received, and the comparison: every accepted
//! message must reach every subscriber of its channel, except around the Redis restart, and
//! there only as the scaling guide allows (see [`Category`]).

use std::collections::BTreeMap;

/// How many seq gaps a stream keeps the details of (the rest are only counted).
const GAPS_KEPT: usize = 64;
/// The largest message index a stream records (sources number their messages from 0; far
/// more than a 12-hour soak sends on one channel).
pub const MAX_INDEX: u64 = 50_000_000;

/// What became of one message a source sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answered with its `seq` (`200 {"seq"}`, or the broadcast plugin's ack).
    Accepted { seq: u64 },
    /// Answered with a refusal (503, an `error` reply).
    Refused(String),
    /// No answer (a timeout, a broken connection): the node may or may not have taken it.
    Unanswered(String),
}

/// One message a source sent: its index on the channel (payload `{"i": N}`), the node it went
/// to, and when (seconds since the soak started).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub index: u64,
    pub node: usize,
    pub sent_at: f64,
    pub outcome: Outcome,
}

/// A jump in `seq` a subscriber saw: the next message it got was not the one after the last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    pub at: f64,
    pub from: u64,
    pub to: u64,
}

/// One channel as one subscriber saw it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// By message index: the `seq` it came with, 0 when it did not come.
    pub received: Vec<u64>,
    pub last_seq: u64,
    /// A message received twice.
    pub duplicates: u64,
    /// A `seq` not above the one before it.
    pub disorder: u64,
    /// Seq gaps: the first `GAPS_KEPT`, and how many in all.
    pub gaps: Vec<Gap>,
    pub gap_count: u64,
    /// Deliveries without a usable index or `seq`.
    pub malformed: u64,
}

impl Stream {
    /// Records message `index` with `seq`, received at `at`.
    pub fn receive(&mut self, index: u64, seq: u64, at: f64) {
        if index >= MAX_INDEX || seq == 0 {
            self.malformed += 1;
            return;
        }
        let slot = usize::try_from(index).unwrap_or(usize::MAX);
        if self.received.len() <= slot {
            self.received.resize(slot + 1, 0);
        }
        if self.received[slot] != 0 {
            self.duplicates += 1;
            return;
        }
        self.received[slot] = seq;
        if seq <= self.last_seq {
            self.disorder += 1;
        } else {
            if self.last_seq != 0 && seq > self.last_seq + 1 {
                self.gap_count += 1;
                if self.gaps.len() < GAPS_KEPT {
                    self.gaps.push(Gap {
                        at,
                        from: self.last_seq,
                        to: seq,
                    });
                }
            }
            self.last_seq = seq;
        }
    }

    fn seq_of(&self, index: u64) -> u64 {
        usize::try_from(index)
            .ok()
            .and_then(|slot| self.received.get(slot))
            .copied()
            .unwrap_or(0)
    }

    /// The `seq` of the last message received before `index` and of the first after it (by
    /// index: the order the source sent them in).
    pub fn around(&self, index: u64) -> (Option<u64>, Option<u64>) {
        let prev = (0..index)
            .rev()
            .map(|i| self.seq_of(i))
            .find(|&seq| seq != 0);
        let next = (index + 1..self.received.len() as u64)
            .map(|i| self.seq_of(i))
            .find(|&seq| seq != 0);
        (prev, next)
    }

    /// Whether the subscriber could tell that message `index` is missing: the next message it
    /// did get skipped at least one `seq` past the one it got before (or past 0, when it got
    /// none before).
    pub fn gap_around(&self, index: u64) -> bool {
        match self.around(index) {
            (_, None) => false,
            (Some(prev), Some(next)) => next > prev + 1,
            (None, Some(next)) => next > 1,
        }
    }
}

/// When Redis was down, seconds since the soak started: killed at `kill_at`, every node ready
/// again at `ready_at`. Losses may fall in `[kill_at - before, ready_at + after]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restart {
    pub kill_at: f64,
    pub ready_at: f64,
    pub before: f64,
    pub after: f64,
}

impl Restart {
    pub fn contains(&self, at: f64) -> bool {
        at >= self.kill_at - self.before && at <= self.ready_at + self.after
    }
}

/// Why a subscriber missed an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// Sent shortly before the kill, accepted, and lost with Redis ("a publish answered 200 at
    /// the moment of a SIGKILL may never arrive"); the subscriber sees a seq gap. Allowed.
    AtKillVisible,
    /// The same without a gap the subscriber could see: silent loss. A failure.
    AtKillSilent,
    /// Sent while Redis was down to another node than the subscriber's, which delivered it to
    /// its own members only ("messages still reach members on the same node"). Allowed
    /// (documented); whether a gap shows is reported.
    OutageOtherNodeVisible,
    OutageOtherNodeSilent,
    /// Sent while Redis was down to the subscriber's own node, and not delivered: the guide
    /// says local members still get it. A failure.
    OutageSameNode,
    /// Outside the restart window. A failure.
    Outside,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::AtKillVisible,
        Category::AtKillSilent,
        Category::OutageOtherNodeVisible,
        Category::OutageOtherNodeSilent,
        Category::OutageSameNode,
        Category::Outside,
    ];

    pub fn allowed(self) -> bool {
        matches!(
            self,
            Category::AtKillVisible
                | Category::OutageOtherNodeVisible
                | Category::OutageOtherNodeSilent
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Category::AtKillVisible => "accepted just before the kill, seq gap seen",
            Category::AtKillSilent => "accepted just before the kill, no seq gap (silent)",
            Category::OutageOtherNodeVisible => {
                "sent during the outage to the other node, seq gap seen"
            }
            Category::OutageOtherNodeSilent => {
                "sent during the outage to the other node, no seq gap (documented: local delivery only)"
            }
            Category::OutageSameNode => "sent during the outage to the subscriber's own node",
            Category::Outside => "outside the restart window",
        }
    }
}

/// One lost (subscriber, message) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    pub channel: String,
    pub index: u64,
    /// The `seq` the message was accepted with, and the node it was sent to.
    pub seq: u64,
    pub node: usize,
    pub sent_at: f64,
    /// The subscriber (its number and node), and the `seq`s it received just before and just
    /// after the message.
    pub subscriber: usize,
    pub subscriber_node: usize,
    pub around: (Option<u64>, Option<u64>),
    pub category: Category,
}

/// A subscriber: its node, when it stopped listening (if before the end), and its streams by
/// channel.
#[derive(Debug, Clone, Default)]
pub struct Subscriber {
    pub node: usize,
    pub ended_at: Option<f64>,
    pub streams: BTreeMap<String, Stream>,
}

/// The comparison of what was sent with what was received.
#[derive(Debug, Clone, Default)]
pub struct Books {
    /// Accepted messages × subscribers of their channel.
    pub expected: u64,
    pub delivered: u64,
    pub lost: Vec<Lost>,
    /// Messages refused or unanswered that some subscriber got anyway, by whether they fell in
    /// the restart window (the node answered an error but the message went out).
    pub delivered_refused: [u64; 2],
    /// Refused and unanswered messages, by whether they fell in the restart window.
    pub refused: [u64; 2],
    pub unanswered: [u64; 2],
    pub duplicates: u64,
    pub disorder: u64,
    pub malformed: u64,
    /// Seq gaps seen, by whether they fell in the restart window.
    pub gaps: [u64; 2],
}

impl Books {
    /// Losses of one category.
    pub fn count(&self, category: Category) -> u64 {
        self.lost.iter().filter(|l| l.category == category).count() as u64
    }
}

/// Compares, channel by channel, what the sources sent (`sent`, by channel) with what the
/// subscribers received. A subscriber that stopped early is held only to messages sent
/// before it stopped.
pub fn reconcile(
    sent: &BTreeMap<String, Vec<Sent>>,
    subscribers: &[Subscriber],
    restart: Option<Restart>,
) -> Books {
    let mut books = Books::default();
    let in_window = |at: f64| restart.is_some_and(|r| r.contains(at));
    let slot = |inside: bool| usize::from(!inside);
    for (channel, messages) in sent {
        for message in messages {
            let inside = in_window(message.sent_at);
            let seq = match &message.outcome {
                Outcome::Accepted { seq } => *seq,
                Outcome::Refused(_) | Outcome::Unanswered(_) => {
                    match message.outcome {
                        Outcome::Refused(_) => books.refused[slot(inside)] += 1,
                        _ => books.unanswered[slot(inside)] += 1,
                    }
                    let got = subscribers.iter().any(|subscriber| {
                        subscriber
                            .streams
                            .get(channel)
                            .is_some_and(|stream| stream.seq_of(message.index) != 0)
                    });
                    if got && matches!(message.outcome, Outcome::Refused(_)) {
                        books.delivered_refused[slot(inside)] += 1;
                    }
                    continue;
                }
            };
            for (number, subscriber) in subscribers.iter().enumerate() {
                if subscriber
                    .ended_at
                    .is_some_and(|ended| message.sent_at >= ended)
                {
                    continue;
                }
                let Some(stream) = subscriber.streams.get(channel) else {
                    continue;
                };
                books.expected += 1;
                if stream.seq_of(message.index) != 0 {
                    books.delivered += 1;
                    continue;
                }
                let category = match restart {
                    Some(restart) if restart.contains(message.sent_at) => {
                        let visible = stream.gap_around(message.index);
                        if message.sent_at < restart.kill_at {
                            if visible {
                                Category::AtKillVisible
                            } else {
                                Category::AtKillSilent
                            }
                        } else if message.node == subscriber.node {
                            Category::OutageSameNode
                        } else if visible {
                            Category::OutageOtherNodeVisible
                        } else {
                            Category::OutageOtherNodeSilent
                        }
                    }
                    _ => Category::Outside,
                };
                books.lost.push(Lost {
                    channel: channel.clone(),
                    index: message.index,
                    seq,
                    node: message.node,
                    sent_at: message.sent_at,
                    subscriber: number,
                    subscriber_node: subscriber.node,
                    around: stream.around(message.index),
                    category,
                });
            }
        }
    }
    for subscriber in subscribers {
        for stream in subscriber.streams.values() {
            books.duplicates += stream.duplicates;
            books.disorder += stream.disorder;
            books.malformed += stream.malformed;
            for gap in &stream.gaps {
                books.gaps[slot(in_window(gap.at))] += 1;
            }
            // Gaps beyond the kept details: counted as outside, the strict reading.
            books.gaps[1] += stream.gap_count - stream.gaps.len() as u64;
        }
    }
    books
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Category, Outcome, Restart, Sent, Stream, Subscriber, reconcile};

    fn accepted(index: u64, node: usize, sent_at: f64, seq: u64) -> Sent {
        Sent {
            index,
            node,
            sent_at,
            outcome: Outcome::Accepted { seq },
        }
    }

    fn subscriber(node: usize, channel: &str, got: &[(u64, u64, f64)]) -> Subscriber {
        let mut stream = Stream::default();
        for &(index, seq, at) in got {
            stream.receive(index, seq, at);
        }
        Subscriber {
            node,
            ended_at: None,
            streams: BTreeMap::from([(channel.to_owned(), stream)]),
        }
    }

    const RESTART: Restart = Restart {
        kill_at: 10.0,
        ready_at: 13.0,
        before: 1.0,
        after: 1.0,
    };

    #[test]
    fn streams_count_gaps_duplicates_and_disorder() {
        let mut stream = Stream::default();
        stream.receive(0, 1, 0.1);
        stream.receive(1, 2, 0.2);
        stream.receive(3, 9, 0.3);
        stream.receive(3, 9, 0.4);
        stream.receive(2, 3, 0.5);
        assert_eq!(stream.gap_count, 1);
        assert_eq!(stream.gaps[0].from, 2);
        assert_eq!(stream.gaps[0].to, 9);
        assert_eq!(stream.duplicates, 1);
        assert_eq!(stream.disorder, 1);
        stream.receive(super::MAX_INDEX, 10, 0.6);
        assert_eq!(stream.malformed, 1);
    }

    #[test]
    fn a_loss_is_visible_only_when_the_next_seq_skips() {
        let mut stream = Stream::default();
        stream.receive(0, 5, 0.0);
        stream.receive(2, 7, 0.0);
        stream.receive(4, 8, 0.0);
        assert!(stream.gap_around(1));
        // Index 3 is missing but 7 -> 8 shows nothing.
        assert!(!stream.gap_around(3));
        // Nothing after it: nothing shows.
        assert!(!stream.gap_around(5));
        let mut first_missing = Stream::default();
        first_missing.receive(1, 2, 0.0);
        assert!(first_missing.gap_around(0));
    }

    #[test]
    fn losses_are_sorted_by_when_and_where_they_happened() {
        let sent = BTreeMap::from([(
            "c".to_owned(),
            vec![
                accepted(0, 0, 1.0, 1),
                // Lost just before the kill; the next seq skips 2.
                accepted(1, 0, 9.5, 2),
                // During the outage on node 1: its own members only.
                accepted(2, 1, 11.0, 3),
                // During the outage on node 0, the subscriber's own node: must arrive.
                accepted(3, 0, 11.5, 4),
                accepted(4, 0, 20.0, 100),
                // Lost long after the restart.
                accepted(5, 0, 30.0, 101),
                accepted(6, 0, 31.0, 102),
                Sent {
                    index: 7,
                    node: 0,
                    sent_at: 11.0,
                    outcome: Outcome::Refused("503".to_owned()),
                },
            ],
        )]);
        let subscribers = [subscriber(
            0,
            "c",
            &[(0, 1, 1.0), (4, 100, 20.0), (6, 102, 31.0)],
        )];
        let books = reconcile(&sent, &subscribers, Some(RESTART));
        assert_eq!(books.expected, 7);
        assert_eq!(books.delivered, 3);
        assert_eq!(books.count(Category::AtKillVisible), 1);
        assert_eq!(books.count(Category::OutageOtherNodeVisible), 1);
        assert_eq!(books.count(Category::OutageSameNode), 1);
        assert_eq!(books.count(Category::Outside), 1);
        assert_eq!(books.refused, [1, 0]);
        // 1 -> 100 at 20.0 (after the window) and 100 -> 102 at 31.0: both outside.
        assert_eq!(books.gaps, [0, 2]);
        let allowed: u64 = Category::ALL
            .iter()
            .filter(|c| c.allowed())
            .map(|c| books.count(*c))
            .sum();
        assert_eq!(allowed, 2);
    }

    #[test]
    fn a_silent_loss_at_the_kill_is_not_allowed() {
        let sent = BTreeMap::from([(
            "c".to_owned(),
            vec![
                accepted(0, 0, 9.0, 1),
                accepted(1, 0, 9.8, 2),
                accepted(2, 0, 14.5, 3),
            ],
        )]);
        // The subscriber got 1 and 3 but 3 came as seq 2: no gap to see.
        let subscribers = [subscriber(0, "c", &[(0, 1, 9.0), (2, 2, 14.5)])];
        let books = reconcile(&sent, &subscribers, Some(RESTART));
        assert_eq!(books.count(Category::AtKillSilent), 1);
        assert!(!Category::AtKillSilent.allowed());
    }

    #[test]
    fn without_a_restart_every_loss_is_outside_and_early_leavers_are_excused() {
        let sent = BTreeMap::from([(
            "c".to_owned(),
            vec![accepted(0, 0, 1.0, 1), accepted(1, 0, 5.0, 2)],
        )]);
        let mut early = subscriber(1, "c", &[(0, 1, 1.0)]);
        early.ended_at = Some(4.0);
        let subscribers = [subscriber(0, "c", &[(0, 1, 1.0)]), early];
        let books = reconcile(&sent, &subscribers, None);
        assert_eq!(books.expected, 3);
        assert_eq!(books.count(Category::Outside), 1);
        assert_eq!(books.lost[0].subscriber, 0);
    }
}
