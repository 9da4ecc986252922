//! Resume: a session that names, in its `subscribe`, where it stopped on an
//! earlier connection continues each stream from there (docs/PROTOCOL.md,
//! "Resume").
//!
//! The stream's position on this shard is `L`, the `seq` of the newest tick
//! of the stream the shard has dispatched. Every tick up to `L` is in the
//! feed's history (written before the ring) unless a later lap replaced it;
//! every tick after `L` is still ahead of the shard's ring cursor and
//! reaches the entry through dispatch. So for a client that handled `SEQ`:
//!
//! - `SEQ >= L`: nothing to replay; the entry starts at `SEQ` and dispatch
//!   brings the rest, each exactly once.
//! - `SEQ < L`: `mode:"all"` replays `SEQ+1 ..= L` from the history into the
//!   session's queue, then dispatch goes on after `L`; positions the history
//!   no longer holds are reported first, as one exact `overflow`.
//!   `mode:"latest"` sends the newest value (`L`) with `cf = L - SEQ`.
//!
//! Everything runs on the shard thread inside one request, between two
//! batches: no tick can be dispatched while the entry is set up, so none is
//! lost or sent twice between the history and the live stream.

use super::*;
use crate::protocol::request::Resume;

/// How a resumed stream starts (for `subscribed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resumed {
    /// `subscribed.subs[].seq`: where the stream continues from.
    pub(super) seq: u64,
    /// Whether every update after `seq` will be sent (or, in latest mode,
    /// was still held).
    pub(super) recovered: bool,
    /// Resumed from the client's position (same epoch): no snapshot.
    pub(super) continued: bool,
}

/// An `overflow` owed to a resumed `mode:"all"` stream: the history no
/// longer held `from ..= to`.
pub(super) struct Gap {
    entry: u32,
    from: u64,
    to: u64,
}

impl Shard {
    /// Applies `resume` to the entries of this request that it names and
    /// that the request created (`accepted[i].1`); returns, in `accepted`'s
    /// order, how each named stream starts, and the gaps to report.
    pub(super) fn resume_entries(
        &mut self,
        slot: u32,
        accepted: &[(u32, bool)],
        resume: &Resume,
    ) -> (Vec<Option<Resumed>>, Vec<Gap>) {
        let mut out = vec![None; accepted.len()];
        let mut gaps = Vec::new();
        let mut from: HashMap<usize, u64> = HashMap::with_capacity(resume.from.len());
        for (ch, name, seq) in &resume.from {
            if let Some(sym) = self.market.symbols.get(name) {
                from.insert(stream_index(sym, *ch), *seq);
            }
        }
        if from.is_empty() {
            return (out, gaps);
        }
        let same_epoch = resume.epoch == epoch_name(self.epoch);
        let queue_cap = self.config.queue_cap;
        let Shard { sessions, last, market, dirty, changes, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else {
            return (out, gaps);
        };
        for (i, &(idx, new)) in accepted.iter().enumerate() {
            let e = &s.entries[idx as usize];
            let stream = stream_index(e.sym, e.ch);
            let Some(&seq) = from.get(&stream) else { continue };
            if !same_epoch || !new {
                // Another numbering (or a stream this connection already
                // had): a new subscription, whatever the client saw.
                out[i] = Some(Resumed { seq: 0, recovered: false, continued: false });
                continue;
            }
            let published = market.latest(e.sym, e.ch).map_or(0, |t| t.seq);
            let l = last.get(stream).map_or(0, |t| t.seq);
            let e = &mut s.entries[idx as usize];
            if seq > published {
                // Ahead of the stream (a client of another node that is
                // further on, or a client's mistake): nothing at or below
                // its `seq` is sent, and nothing is vouched for.
                e.accepted_seq = seq;
                e.sent_seq = seq;
                out[i] = Some(Resumed { seq, recovered: false, continued: true });
                continue;
            }
            if seq >= l {
                // Everything after `seq` is still ahead on the ring.
                e.accepted_seq = seq;
                e.sent_seq = seq;
                out[i] = Some(Resumed { seq, recovered: true, continued: true });
                continue;
            }
            // Missed `seq+1 ..= l`: the last one the history lacks, if any.
            let lost_to = (seq + 1..=l).rev().find(|&p| market.history.load(stream, p).is_none());
            let recovered = lost_to.is_none();
            out[i] = Some(Resumed { seq, recovered, continued: true });
            e.sent_seq = seq;
            match e.mode {
                Mode::Latest => {
                    // The newest value, `cf` counting everything missed.
                    e.accepted_seq = seq;
                    let newest = last[stream];
                    s.offer(idx, &newest, queue_cap);
                }
                Mode::All => {
                    let start = lost_to.unwrap_or(seq);
                    if let Some(to) = lost_to {
                        gaps.push(Gap { entry: idx, from: seq + 1, to });
                    }
                    e.accepted_seq = start;
                    e.sent_seq = start;
                    for p in start + 1..=l {
                        // Held a moment ago; a later lap may have replaced it
                        // since, which `offer` cannot tell: read again.
                        match market.history.load(stream, p) {
                            Some(t) => {
                                s.offer(idx, &t, queue_cap);
                            }
                            None => s.lose_through(idx, p),
                        }
                    }
                }
            }
        }
        // Replayed updates and newest values go out with the next frame.
        if s.has_data(changes.generation()) && !s.on_dirty_list {
            s.on_dirty_list = true;
            dirty.push(slot);
        }
        (out, gaps)
    }

    /// Queues the `overflow` of each gap, right after `subscribed`: before
    /// the replayed updates, which frames carry later.
    pub(super) fn report_gaps(&mut self, slot: u32, gaps: Vec<Gap>) {
        let Shard { sessions, names, metrics, .. } = self;
        let Some(s) = sessions.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        for gap in gaps {
            let e = &s.entries[gap.entry as usize];
            let (ch, sym, lost) = (e.ch, e.sym, gap.to - gap.from + 1);
            let cseq = s.next_cseq();
            if s.format.binary {
                let mut buf = Vec::with_capacity(96);
                binary::begin_frame(&mut buf, s.format, cseq);
                binary::write_overflow(&mut buf, ch, sym, gap.from, gap.to, lost, s.format);
                binary::finish_frame(&mut buf);
                s.out.push(OpCode::Binary, buf);
            } else {
                s.send(&Control::Overflow {
                    ch: ch.name(),
                    sym: &names[sym.index()],
                    lost,
                    from_seq: gap.from,
                    to_seq: gap.to,
                    cseq,
                });
            }
            let m = &metrics.counters;
            ShardCounters::add(&m.overflows, 1);
            ShardCounters::add(&m.overflow_lost, lost);
            ShardCounters::add(&m.messages_out, 1);
        }
    }
}
