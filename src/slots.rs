//! Who keeps a connection slot of the status endpoint or the guest screen when they are all
//! taken (pure; `http::accept_loop` owns the sockets).
//!
//! A new connection is always taken: a screen that connects or reconnects (a kiosk browser
//! restarted, a tablet woken) must show the next verdict, whatever else holds connections.
//! Room is made by closing one connection that is already open:
//!
//! 1. A peer (an IP address) holds at most `per_peer` connections: at its limit, its own oldest
//!    is closed. One client, however many connections it opens, only ever pushes out itself.
//! 2. When every slot is taken, the oldest connection of the peer that holds the most is
//!    closed, peers on other machines before the machine's own loopback (the kiosk browser on
//!    the Pi itself is the screen guests see).
//!
//! A closed event stream is opened again by the browser after a second; the page opens a new
//! one itself if the browser gives up.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// How many connections at most, and how many of them one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max: usize,
    pub per_peer: usize,
}

/// The open connections, by the order they came in.
#[derive(Debug, Default)]
pub struct Slots {
    next: u64,
    /// id -> peer (ids grow: the smallest is the oldest).
    open: BTreeMap<u64, IpAddr>,
}

/// A connection taken: its id, and the connection to close to make room for it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub id: u64,
    pub evict: Option<u64>,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn held_by(&self, peer: IpAddr) -> usize {
        self.open.values().filter(|p| **p == peer).count()
    }

    /// Takes a connection from `peer`, choosing the one to close (already removed here).
    pub fn admit(&mut self, peer: IpAddr, limits: Limits) -> Admission {
        let peer = peer.to_canonical();
        let evict = if self.held_by(peer) >= limits.per_peer.max(1) {
            self.oldest_of(peer)
        } else if self.open.len() >= limits.max.max(1) {
            self.victim()
        } else {
            None
        };
        if let Some(id) = evict {
            self.open.remove(&id);
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(id, peer);
        Admission { id, evict }
    }

    /// The connection ended (or was closed to make room).
    pub fn release(&mut self, id: u64) {
        self.open.remove(&id);
    }

    fn oldest_of(&self, peer: IpAddr) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, p)| **p == peer)
            .map(|(id, _)| *id)
    }

    /// The oldest connection of the peer holding the most, other machines first.
    fn victim(&self) -> Option<u64> {
        let mut count: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for p in self.open.values() {
            *count.entry(*p).or_default() += 1;
        }
        let pick = |remote_only: bool| {
            count
                .iter()
                .filter(|(p, _)| !remote_only || !p.is_loopback())
                .max_by(|a, b| {
                    // Most connections; among equals, the one whose oldest is older.
                    a.1.cmp(b.1)
                        .then_with(|| self.oldest_of(*b.0).cmp(&self.oldest_of(*a.0)))
                })
                .map(|(p, _)| *p)
        };
        let peer = pick(true).or_else(|| pick(false))?;
        self.oldest_of(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const L: Limits = Limits {
        max: 8,
        per_peer: 4,
    };

    #[test]
    fn one_peer_only_ever_pushes_out_itself() {
        let mut s = Slots::default();
        let kiosk = s.admit(ip("127.0.0.1"), L);
        let mut last = None;
        for _ in 0..40 {
            last = Some(s.admit(ip("10.0.0.9"), L));
        }
        assert_eq!(s.len(), 5);
        assert!(s.open.contains_key(&kiosk.id));
        assert_eq!(s.held_by(ip("10.0.0.9")), 4);
        // Its 40th pushed out its 36th.
        let last = last.unwrap();
        assert_eq!(last.evict, Some(last.id - 4));
    }

    #[test]
    fn a_screen_always_gets_in_and_other_machines_go_first() {
        let mut s = Slots::default();
        let kiosk = s.admit(ip("127.0.0.1"), L);
        // Seven tablets, one connection each: full.
        let tablets: Vec<Admission> = (1..=7)
            .map(|i| s.admit(ip(&format!("192.168.1.{i}")), L))
            .collect();
        assert!(tablets.iter().all(|a| a.evict.is_none()));
        assert_eq!(s.len(), 8);
        // The kiosk reloads: a new connection, the oldest tablet makes room.
        let again = s.admit(ip("127.0.0.1"), L);
        assert_eq!(again.evict, Some(tablets[0].id));
        assert!(s.open.contains_key(&kiosk.id));
        // More tablets keep coming: the kiosk's stay (loopback goes last).
        for i in 8..40 {
            s.admit(ip(&format!("192.168.1.{i}")), L);
        }
        assert!(s.open.contains_key(&kiosk.id) && s.open.contains_key(&again.id));
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn when_full_the_peer_holding_the_most_gives_way() {
        let mut s = Slots::default();
        let a: Vec<Admission> = (0..3).map(|_| s.admit(ip("10.0.0.1"), L)).collect();
        let b: Vec<Admission> = (0..4).map(|_| s.admit(ip("10.0.0.2"), L)).collect();
        let c = s.admit(ip("10.0.0.3"), L);
        assert!(c.evict.is_none());
        let d = s.admit(ip("10.0.0.4"), L);
        assert_eq!(d.evict, Some(b[0].id), "10.0.0.2 holds 4");
        let e = s.admit(ip("10.0.0.5"), L);
        // 10.0.0.1 and .2 hold 3 each; .1's oldest is older.
        assert_eq!(e.evict, Some(a[0].id));
        s.release(c.id);
        assert_eq!(s.admit(ip("10.0.0.6"), L).evict, None);
    }

    #[test]
    fn only_loopback_peers_still_make_room() {
        let mut s = Slots::default();
        let first = s.admit(
            ip("127.0.0.1"),
            Limits {
                max: 2,
                per_peer: 2,
            },
        );
        s.admit(
            ip("127.0.0.2"),
            Limits {
                max: 2,
                per_peer: 2,
            },
        );
        let third = s.admit(
            ip("::1"),
            Limits {
                max: 2,
                per_peer: 2,
            },
        );
        assert_eq!(third.evict, Some(first.id));
        // An IPv4 peer seen through an IPv6 socket is the same peer.
        let mut s = Slots::default();
        let l = Limits {
            max: 8,
            per_peer: 1,
        };
        let v4 = s.admit(ip("10.1.1.1"), l);
        assert_eq!(s.admit(ip("::ffff:10.1.1.1"), l).evict, Some(v4.id));
    }
}
