//! Which broker acknowledgement belongs to which stored event (pure).
//!
//! rumqttc's `publish` returns no packet id: each publish request becomes, in the order they
//! were made, one `Outgoing::Publish(pkid)` of the event loop (QoS 0 too, with id 0). So the
//! requests are remembered in order (an event's `seq`, or none for the door's other messages),
//! each outgoing id is matched to the oldest request not yet matched, and a PUBACK's id gives
//! the event back. A new session (the client starts clean) drops whatever was in flight: the
//! window starts again from the oldest event still in the store.

use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub struct Window {
    limit: usize,
    next_after: i64,
    order: VecDeque<Option<i64>>,
    by_pkid: HashMap<u16, i64>,
    in_flight: usize,
}

impl Window {
    /// At most `limit` events in flight.
    pub fn new(limit: usize) -> Self {
        Window {
            limit,
            next_after: 0,
            order: VecDeque::new(),
            by_pkid: HashMap::new(),
            in_flight: 0,
        }
    }

    /// A new session: everything not acknowledged is sent again, oldest first.
    pub fn reset(&mut self) {
        *self = Window::new(self.limit);
    }

    /// How many more events may be handed to the client now.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.in_flight)
    }

    /// The last event handed to the client (the next batch starts after it).
    pub fn after(&self) -> i64 {
        self.next_after
    }

    /// The client took a publish request: an event's (`Some(seq)`) or another message's.
    pub fn handed(&mut self, seq: Option<i64>) {
        self.order.push_back(seq);
        if let Some(s) = seq {
            self.in_flight += 1;
            self.next_after = s;
        }
    }

    /// The event loop sent the next publish request with this packet id.
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(Some(seq)) = self.order.pop_front() {
            self.by_pkid.insert(pkid, seq);
        }
    }

    /// The broker acknowledged `pkid`: the event it carried, if it was one.
    pub fn acked(&mut self, pkid: u16) -> Option<i64> {
        let seq = self.by_pkid.remove(&pkid)?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_find_their_events_among_other_messages() {
        let mut w = Window::new(3);
        w.handed(None); // online
        w.handed(Some(10));
        w.handed(None); // a QoS 0 verdict for Home Assistant
        w.handed(Some(11));
        assert_eq!((w.room(), w.after()), (1, 11));
        w.outgoing(1);
        w.outgoing(2);
        w.outgoing(0);
        w.outgoing(3);
        assert_eq!(w.acked(1), None, "the status message");
        assert_eq!(w.acked(3), Some(11), "acks may come in any order");
        assert_eq!(w.acked(2), Some(10));
        assert_eq!(w.acked(2), None, "once");
        assert_eq!(w.room(), 3);
        w.handed(Some(12));
        w.reset();
        assert_eq!(
            (w.room(), w.after()),
            (3, 0),
            "a new session starts from the oldest"
        );
    }
}
