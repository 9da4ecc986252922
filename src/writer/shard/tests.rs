//! Unit tests of the shard: frames as a client decodes them, for scanning
//! and per-tick sessions, mode switches, snapshots and random requests.
use std::collections::BTreeMap;

use super::*;
use crate::protocol::binary::{Record, decode_header, decode_record, is_binary_frame};
use crate::protocol::request::Resume;
use crate::tick::{Channels, Price};

const SYMBOLS: u32 = 20;

fn shard() -> Shard {
    shard_of(SYMBOLS)
}

fn shard_of(symbols: u32) -> Shard {
    Shard::for_tests(symbols, ShardConfig::default())
}

fn subscribe(shard: &mut Shard, slot: u32, symbols: &[&str], mode: Mode) {
    let symbols = symbols.iter().map(|s| (*s).to_string()).collect();
    subscribe_with(shard, slot, symbols, mode, false);
}

/// A `subscribe` on both channels, without `max_hz`.
fn subscribe_with(shard: &mut Shard, slot: u32, symbols: Vec<String>, mode: Mode, snapshot: bool) {
    let channels = Channels::BOTH;
    let req = Request::Subscribe {
        id: None,
        symbols,
        channels,
        mode,
        max_hz: None,
        snapshot,
        resume: None,
    };
    shard.handle(slot, req);
}

/// A `tickwire.v1.bin` session with the replies to its requests taken.
fn session(shard: &mut Shard, uid: u64, symbols: &[&str], mode: Mode) -> u32 {
    let (slot, _ctl) = shard.open_session(Format { binary: true, ..Format::default() }, uid);
    subscribe(shard, slot, symbols, mode);
    take(shard, slot);
    slot
}

/// What the socket task would write now, as decoded market-data records.
fn take(shard: &mut Shard, slot: u32) -> Vec<Record> {
    let mut frames = Vec::new();
    let now = Instant::now();
    shard.take_outgoing(slot, &mut frames, now);
    shard.written(slot, now);
    let mut records = Vec::new();
    for f in frames.iter().map(|f| &f.payload[..]).filter(|f| is_binary_frame(f)) {
        let h = decode_header(f).expect("a valid frame");
        records.extend((0..h.count as usize).map(|i| decode_record(f, &h, i)));
    }
    records
}

/// A tick with `seq` of the test's stream number `stream`: `sym * 2 +
/// channel`, quotes and trades only (not the shard's stream index).
fn tick(stream: u32, seq: u64) -> Tick {
    let sym = SymbolId(stream / 2);
    let t = if stream.is_multiple_of(2) {
        Tick::quote(sym, seq, Price(100 + seq as i64), 1, Price(200), 1)
    } else {
        Tick::trade(sym, seq, Price(100 + seq as i64), 1)
    };
    Tick { seq, ..t }
}

/// (ch, sym) -> (seq, cf) of every quote or trade record, in order.
fn by_stream(records: &[Record]) -> BTreeMap<(u8, u32), Vec<(u64, u64)>> {
    let mut m: BTreeMap<(u8, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == 1 || r.kind == 2) {
        m.entry((r.ch, r.sym)).or_default().push((r.seq, r.cf));
    }
    m
}

#[test]
fn scanning_session_gets_what_a_per_tick_session_gets() {
    let mut shard = shard();
    let names: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // The same streams, latest mode: through the change log, and named
    // (offered tick by tick, the reference).
    let scan = session(&mut shard, 1, &["*"], Mode::Latest);
    let named = session(&mut shard, 2, &names, Mode::Latest);
    assert!(shard.session(scan).expect("open").scanning);
    assert!(!shard.session(named).expect("open").scanning);
    let mut seqs = vec![0u64; SYMBOLS as usize * 2];
    let mut sent = vec![[0u64; 2]; SYMBOLS as usize * 2];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Busy streams and quiet ones, as in a real feed.
        let stream = ((x % 64) * (x % 64) / 100) as u32 % (SYMBOLS * 2);
        seqs[stream as usize] += 1;
        shard.dispatch(&tick(stream, seqs[stream as usize]));
        if !(x >> 20).is_multiple_of(7) && round != 2999 {
            continue;
        }
        shard.end_of_batch();
        let (a, b) = (take(&mut shard, scan), take(&mut shard, named));
        // Same updates, each stream once per frame, order aside.
        let (a, b) = (by_stream(&a), by_stream(&b));
        assert_eq!(a, b, "round {round}");
        for ((ch, sym), msgs) in a {
            let st = (sym * 2 + u32::from(ch)) as usize;
            for (seq, cf) in msgs {
                // `seq` rises by exactly `cf` from the last message.
                assert_eq!(seq, sent[st][0] + cf, "stream {st}");
                sent[st][0] = seq;
            }
        }
    }
    // Converged: every stream's last message is its newest value.
    for (st, seq) in seqs.iter().enumerate() {
        assert_eq!(sent[st][0], *seq, "stream {st}");
    }
    // cseq contiguous: both sessions sent the same number of messages.
    let (a, b) =
        (shard.session(scan).expect("open").cseq, shard.session(named).expect("open").cseq);
    assert_eq!(a, b);
}

#[test]
fn a_scan_past_the_frame_budget_goes_on_in_the_next_frame() {
    let mut shard = shard_of(1000);
    let slot = session(&mut shard, 1, &["*"], Mode::Latest);
    // 2,000 changed streams: more than one frame's budget.
    for stream in 0..2000 {
        shard.dispatch(&tick(stream, 1));
    }
    // One frame per take: the socket task's write loop.
    let mut got = BTreeMap::new();
    let mut frames = 0;
    loop {
        let records = take(&mut shard, slot);
        if records.is_empty() {
            break;
        }
        frames += 1;
        for (k, v) in by_stream(&records) {
            assert!(got.insert(k, v).is_none(), "{k:?} twice");
        }
    }
    assert!(frames > 1, "one frame of {} bytes", MAX_FRAME_BYTES);
    // Every stream once, nothing conflated.
    assert_eq!(got.len(), 2000);
    assert!(got.values().all(|v| *v == vec![(1, 1)]));
}

#[test]
fn a_named_all_mode_stream_inside_a_latest_wildcard_gets_every_tick() {
    let mut shard = shard();
    let slot = session(&mut shard, 1, &["*"], Mode::Latest);
    subscribe(&mut shard, slot, &["S1"], Mode::All);
    take(&mut shard, slot);
    for seq in 1..=3 {
        shard.dispatch(&tick(2, seq)); // S1 quotes: mode all
        shard.dispatch(&tick(4, seq)); // S2 quotes: latest via the wildcard
    }
    shard.end_of_batch();
    let got = by_stream(&take(&mut shard, slot));
    assert_eq!(got[&(0, 1)], vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(got[&(0, 2)], vec![(3, 3)]);
}

#[test]
fn leaving_latest_mode_reports_what_the_scan_had_not_sent() {
    let mut shard = shard();
    let slot = session(&mut shard, 1, &["*"], Mode::Latest);
    for seq in 1..=5 {
        shard.dispatch(&tick(0, seq));
    }
    // Five updates conflated and not sent, then mode all.
    subscribe(&mut shard, slot, &["*"], Mode::All);
    assert!(!shard.session(slot).expect("open").scanning);
    // Until that loss is reported, more updates join it (one run per entry).
    shard.dispatch(&tick(0, 6));
    shard.end_of_batch();
    let got = take(&mut shard, slot);
    let overflow = got.iter().find(|r| r.kind == 3).expect("an overflow record");
    // from_seq 1, to_seq 6, lost 6: no seq jump without an overflow.
    assert_eq!((overflow.p1, overflow.seq, overflow.p2), (1, 6, 6));
    assert!(by_stream(&got).is_empty());
    // After it, every update.
    shard.dispatch(&tick(0, 7));
    shard.end_of_batch();
    assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(7, 1)]);
}

#[test]
fn switching_all_to_latest_sends_the_newest_value_not_the_queue() {
    let mut shard = shard();
    shard.config.queue_cap = 2;
    let slot = session(&mut shard, 1, &["*"], Mode::All);
    for seq in 1..=5 {
        shard.dispatch(&tick(0, seq));
    }
    // Two updates queued and three lost, none sent or reported, then
    // mode latest: the newest value, and no overflow.
    subscribe(&mut shard, slot, &["*"], Mode::Latest);
    let got = take(&mut shard, slot);
    assert!(got.iter().all(|r| r.kind != 3), "{got:?}");
    assert_eq!(by_stream(&got)[&(0, 0)], vec![(5, 5)]);
    shard.dispatch(&tick(0, 6));
    shard.end_of_batch();
    assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(6, 1)]);
}

#[test]
fn a_snapshot_takes_the_queued_updates_it_covers_out_of_the_queue() {
    let mut shard = shard();
    let slot = session(&mut shard, 1, &["S0"], Mode::All);
    let (mut ring, _) = crate::ring::ring::<Tick>(2);
    let mut seqs = vec![0u64; 2 * 4096];
    let mut publish = |shard: &mut Shard, n: usize| {
        let mut batch = vec![tick(0, 0); n];
        crate::feed::publish(&mut batch, &mut seqs, &mut ring, &shard.market);
        batch.iter().for_each(|t| {
            shard.dispatch(t);
        });
    };
    publish(&mut shard, 3); // queued, not sent
    subscribe_with(&mut shard, slot, vec!["S0".into()], Mode::All, true);
    let got = take(&mut shard, slot);
    let snapshot = |r: &&Record| r.flags & binary::RECORD_SNAPSHOT != 0;
    assert_eq!(got.iter().filter(snapshot).map(|r| r.seq).collect::<Vec<_>>(), [3]);
    assert!(got.iter().filter(|r| !snapshot(r)).all(|r| r.kind != 1), "{got:?}");
    publish(&mut shard, 1);
    shard.end_of_batch();
    assert_eq!(by_stream(&take(&mut shard, slot))[&(0, 0)], vec![(4, 1)]);
}

/// Checks records against the positions a client keeps per stream: an
/// update rises by exactly its `cf`, an overflow starts right after
/// the position and counts what it skips, a snapshot never goes back.
fn check_positions(pos: &mut BTreeMap<(u8, u32), u64>, records: &[Record]) {
    for r in records {
        let p = pos.entry((r.ch, r.sym)).or_insert(0);
        match r.kind {
            1 | 2 if r.flags & binary::RECORD_SNAPSHOT != 0 => assert!(r.seq >= *p, "{r:?}"),
            1 | 2 => assert_eq!(r.seq, *p + r.cf, "{r:?}"),
            3 => assert_eq!((r.p1 as u64, r.p2 as u64), (*p + 1, r.seq - *p), "{r:?}"),
            _ => continue,
        }
        *p = r.seq;
    }
}

#[test]
fn random_requests_keep_every_stream_accounted_for() {
    // Small queue (losses), snapshots, mode switches of the wildcard
    // and of named streams inside it, frames taken or left pending;
    // the debug checks in the frame build and `Subscriber::settle_sent`
    // run throughout.
    let mut shard = shard();
    shard.config.queue_cap = 6;
    let slot = session(&mut shard, 1, &["*"], Mode::All);
    let (mut ring, _) = crate::ring::ring::<Tick>(2);
    let mut seqs = vec![0u64; 2 * 4096];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut pos = BTreeMap::new();
    for _ in 0..20_000 {
        let r = next();
        match r % 16 {
            0..=8 => {
                let mut batch = vec![tick((r >> 8) as u32 % 8, 0)];
                crate::feed::publish(&mut batch, &mut seqs, &mut ring, &shard.market);
                shard.dispatch(&batch[0]);
            }
            9 | 10 => shard.end_of_batch(),
            11 | 12 => check_positions(&mut pos, &take(&mut shard, slot)),
            _ => {
                let symbols = if r % 16 == 13 {
                    vec!["*".to_string()]
                } else {
                    vec![format!("S{}", (r >> 8) % 4)]
                };
                let mode = if (r >> 16) % 2 == 0 { Mode::All } else { Mode::Latest };
                subscribe_with(&mut shard, slot, symbols, mode, (r >> 17) % 3 == 0);
            }
        }
    }
    shard.end_of_batch();
    check_positions(&mut pos, &take(&mut shard, slot));
    assert!(pos.len() >= 8, "every stream was delivered: {pos:?}");
}

#[test]
fn unsubscribing_the_wildcard_stops_the_scan() {
    let mut shard = shard();
    let slot = session(&mut shard, 1, &["*"], Mode::Latest);
    shard.dispatch(&tick(0, 1));
    let req =
        Request::Unsubscribe { id: None, symbols: vec!["*".into()], channels: Channels::BOTH };
    shard.handle(slot, req);
    take(&mut shard, slot);
    shard.dispatch(&tick(0, 2));
    // Nothing scans, so a batch of ticks leaves nothing to flush.
    assert!(!shard.has_dirty());
    assert!(take(&mut shard, slot).is_empty());
}

/// A shard whose market keeps `history` ticks per stream.
fn shard_with_history(history: usize) -> Shard {
    let table = Arc::new(crate::tick::SymbolTable::new(64));
    for i in 0..4 {
        table.intern(&format!("S{i}")).expect("symbol");
    }
    let market = Arc::new(Market::with_history(table, history));
    let reader = crate::ring::ring::<Tick>(2).1.reader();
    Shard::new(market, reader, ShardConfig::default(), Arc::new(ShardMetrics::default()))
}

/// Publishes the next `n` ticks of `stream` as the feed thread does
/// (history and latest table first), and dispatches them.
fn publish(shard: &mut Shard, stream: u32, from: u64, to: u64) {
    for seq in from..=to {
        let t = tick(stream, seq);
        shard.market.history.store(t.stream(), seq, t);
        shard.market.latest.store(t.stream(), t);
        shard.dispatch(&t);
    }
    shard.end_of_batch();
}

/// A binary session that subscribes to S0's quotes with `resume` from `seq`
/// in `epoch`; returns its slot and the `subscribed` reply.
fn resumed_session(
    shard: &mut Shard,
    mode: Mode,
    epoch: &str,
    seq: u64,
) -> (u32, serde_json::Value) {
    let (slot, _) = shard.open_session(Format { binary: true, ..Format::default() }, 9);
    let resume = Resume { epoch: epoch.into(), from: vec![(Channel::Quotes, "S0".into(), seq)] };
    let req = Request::Subscribe {
        id: Some(1),
        symbols: vec!["S0".into()],
        channels: Channels::EMPTY.with(Channel::Quotes),
        mode,
        max_hz: None,
        snapshot: true,
        resume: Some(resume),
    };
    shard.handle(slot, req);
    let mut frames = Vec::new();
    shard.take_outgoing(slot, &mut frames, Instant::now());
    shard.written(slot, Instant::now());
    let reply = frames
        .iter()
        .filter(|f| f.op == OpCode::Text)
        .flat_map(|f| serde_json::from_slice::<Vec<serde_json::Value>>(&f.payload).unwrap())
        .find(|m| m["type"] == "subscribed")
        .expect("subscribed");
    // Records that came in the same write (an overflow) count too.
    let mut early = Vec::new();
    for f in frames.iter().map(|f| &f.payload[..]).filter(|f| is_binary_frame(f)) {
        let h = decode_header(f).unwrap();
        early.extend((0..h.count as usize).map(|i| decode_record(f, &h, i)));
    }
    EARLY.with(|e| *e.borrow_mut() = early);
    (slot, reply)
}

thread_local! {
    /// Records written with the `subscribed` reply of [`resumed_session`].
    static EARLY: std::cell::RefCell<Vec<Record>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every record the session gets until it has nothing more.
fn drain(shard: &mut Shard, slot: u32) -> Vec<Record> {
    let mut all = EARLY.with(|e| std::mem::take(&mut *e.borrow_mut()));
    loop {
        let got = take(shard, slot);
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

#[test]
fn resume_in_mode_all_replays_the_missed_updates_then_goes_on_live() {
    let mut shard = shard_with_history(64);
    publish(&mut shard, 0, 1, 30);
    let epoch = epoch_name(shard.epoch);
    let (slot, reply) = resumed_session(&mut shard, Mode::All, &epoch, 12);
    let sub = &reply["subs"][0];
    // Recovered from 12: no snapshot, seq is where it continues from.
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(true), Some(12)));
    publish(&mut shard, 0, 31, 35);
    let got = drain(&mut shard, slot);
    assert!(got.iter().all(|r| r.flags & 1 == 0), "no snapshot");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    // 13..=30 from the history, then 31..=35 live: each once, in order.
    assert_eq!(seqs, (13..=35).collect::<Vec<_>>());
}

#[test]
fn resume_past_the_history_reports_the_exact_gap_first() {
    let mut shard = shard_with_history(8);
    publish(&mut shard, 0, 1, 30);
    let epoch = epoch_name(shard.epoch);
    let (slot, reply) = resumed_session(&mut shard, Mode::All, &epoch, 5);
    let sub = &reply["subs"][0];
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(false), Some(5)));
    let got = drain(&mut shard, slot);
    // The history holds 23..=30: an overflow of exactly 6..=22 comes first...
    assert_eq!(got[0].kind, 3);
    assert_eq!((got[0].p1, got[0].seq, got[0].p2), (6, 22, 17));
    // ...then every update still held, in order.
    let seqs: Vec<u64> = got[1..].iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (23..=30).collect::<Vec<_>>());
}

#[test]
fn resume_in_mode_latest_sends_the_newest_value_with_cf() {
    let mut shard = shard_with_history(64);
    publish(&mut shard, 0, 1, 30);
    let epoch = epoch_name(shard.epoch);
    let (slot, reply) = resumed_session(&mut shard, Mode::Latest, &epoch, 12);
    assert_eq!(reply["subs"][0]["recovered"], true);
    let got = drain(&mut shard, slot);
    // One update standing for the 18 missed.
    assert_eq!(got.iter().map(|r| (r.seq, r.cf)).collect::<Vec<_>>(), [(30, 18)]);
}

#[test]
fn resume_in_another_epoch_starts_fresh_with_a_snapshot() {
    let mut shard = shard_with_history(64);
    publish(&mut shard, 0, 1, 30);
    let (slot, reply) = resumed_session(&mut shard, Mode::All, "e-1", 12);
    let sub = &reply["subs"][0];
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(false), Some(30)));
    let got = drain(&mut shard, slot);
    assert_eq!(got.iter().map(|r| (r.seq, r.flags & 1)).collect::<Vec<_>>(), [(30, 1)]);
}

#[test]
fn resume_ahead_of_the_stream_sends_nothing_at_or_below_it() {
    let mut shard = shard_with_history(64);
    publish(&mut shard, 0, 1, 30);
    let epoch = epoch_name(shard.epoch);
    let (slot, reply) = resumed_session(&mut shard, Mode::All, &epoch, 40);
    let sub = &reply["subs"][0];
    // Not vouched for, no snapshot (it would be older than 40).
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(false), Some(40)));
    publish(&mut shard, 0, 31, 45);
    let seqs: Vec<u64> = drain(&mut shard, slot).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (41..=45).collect::<Vec<_>>());
}

#[test]
fn resume_at_the_current_position_waits_for_what_the_ring_brings() {
    // The market is further on than this shard has dispatched: the ticks
    // in between reach the entry through the ring, none twice.
    let mut shard = shard_with_history(64);
    publish(&mut shard, 0, 1, 20);
    for seq in 21..=25 {
        let t = tick(0, seq);
        shard.market.history.store(t.stream(), seq, t);
        shard.market.latest.store(t.stream(), t);
    }
    let epoch = epoch_name(shard.epoch);
    let (slot, reply) = resumed_session(&mut shard, Mode::All, &epoch, 22);
    assert_eq!(reply["subs"][0]["recovered"], true);
    for seq in 21..=25 {
        shard.dispatch(&tick(0, seq));
    }
    shard.end_of_batch();
    let seqs: Vec<u64> = drain(&mut shard, slot).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [23, 24, 25]);
}

#[test]
fn a_jump_in_a_numbered_feed_is_an_exact_overflow_in_mode_all() {
    // An edge's bus lost 3 and 4: the client learns exactly that, in order,
    // and never sees a jump without an overflow.
    let mut shard = shard();
    let slot = session(&mut shard, 1, &["S0"], Mode::All);
    for seq in [1, 2, 5, 6] {
        shard.dispatch(&tick(0, seq));
        shard.end_of_batch();
    }
    let mut got = Vec::new();
    loop {
        let r = take(&mut shard, slot);
        if r.is_empty() {
            break;
        }
        got.extend(r.iter().map(|r| (r.kind, r.seq)));
    }
    // Quotes 1 and 2, an overflow through 5 (the tick that showed the gap
    // goes with it), then 6.
    assert_eq!(got, [(1, 1), (1, 2), (3, 5), (1, 6)]);
}
