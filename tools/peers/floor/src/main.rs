//! floor peer: not a server anyone would pick, but a measuring instrument for
//! tickwire-bench: the least a server must do to send one update to every
//! socket. Each update becomes one small WebSocket frame written to each
//! socket with one `write` system call, from one writer thread per core
//! (2 here), and nothing else: no queue, no task wake-up, no per-connection
//! state beyond the socket and its `cseq`. The hot-symbol shape of the
//! connection-scale curve (every connection on one symbol) measured against
//! it tells how close a server comes to what the machine allows.
//!
//! It speaks the peer contract of ../README.md with two shortcuts that cost
//! a real server more, never less: right after the handshake it sends the
//! `welcome` and a `subscribed` reply (id 1, `cseq` 1) without waiting for
//! the request, and from then on it never reads the socket (requests,
//! `ping`s included, stay unread in the kernel's buffer); every connection
//! gets every update, as with `["*"]`. A `write` that would block drops that
//! update for that socket (a `seq` gap in the harness): the floor never
//! queues. The feed is the contract's open-loop schedule (update k due at
//! start + k/R, round-robin over S0000..), stamped with the realtime clock.

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Writer threads: one per core of the project's machine.
const WRITERS: usize = 2;
/// Threads doing handshakes: several, so that a connect storm is not
/// served one blocking handshake after another.
const ACCEPTORS: usize = 4;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// One quote as the feed made it; each writer adds `cseq` and `to`.
#[derive(Clone)]
struct Quote {
    sym: u32,
    seq: u64,
    mid: u64,
    t: u64,
    ti: u64,
}

/// A text frame (server to client: no mask) holding `payload`, into `out`.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.clear();
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A connection owned by a writer.
struct Conn {
    sock: TcpStream,
    cseq: u64,
}

/// The handshake, then `welcome` and `subscribed` (cseq 1), blocking; the
/// socket is non-blocking afterwards.
fn open(sock: TcpStream, session: u64) -> Option<Conn> {
    sock.set_nodelay(true).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut ws = tungstenite::accept(sock).ok()?;
    let sock = ws.get_mut().try_clone().ok()?;
    drop(ws);
    let mut buf = Vec::new();
    let welcome = format!(
        "[{{\"type\":\"welcome\",\"session\":\"p-{session}\",\"server\":\"floor/0.1.0\",\
         \"time_unit\":\"ns\",\"hb_ms\":1000,\"epoch\":\"peer\"}}]"
    );
    let reply = "[{\"type\":\"subscribed\",\"id\":1,\"cseq\":1,\"subs\":[],\"rejected\":[]}]";
    let mut s = &sock;
    for text in [welcome.as_str(), reply] {
        frame(&mut buf, text.as_bytes());
        s.write_all(&buf).ok()?;
    }
    sock.set_nonblocking(true).ok()?;
    Some(Conn { sock, cseq: 1 })
}

/// One writer: takes new connections between updates, writes each update to
/// each of its sockets once.
fn writer(conns: mpsc::Receiver<Conn>, quotes: mpsc::Receiver<Quote>) {
    let mut mine: Vec<Conn> = Vec::new();
    let (mut json, mut buf) = (Vec::with_capacity(256), Vec::with_capacity(256));
    loop {
        let q = match quotes.recv_timeout(Duration::from_millis(1)) {
            Ok(q) => Some(q),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        mine.extend(conns.try_iter());
        let Some(q) = q else { continue };
        mine.retain_mut(|c| {
            c.cseq += 1;
            json.clear();
            let _ = write!(
                json,
                "[{{\"type\":\"q\",\"sym\":\"S{:04}\",\"seq\":{},\"cseq\":{},\"bp\":{}.{:02},\"bs\":100,\
                 \"ap\":{}.{:02},\"as\":100,\"t\":{},\"ti\":{},\"to\":{}}}]",
                q.sym,
                q.seq,
                c.cseq,
                q.mid / 100,
                q.mid % 100,
                (q.mid + 1) / 100,
                (q.mid + 1) % 100,
                q.t,
                q.ti,
                now_ns()
            );
            frame(&mut buf, &json);
            match (&c.sock).write(&buf) {
                Ok(n) => n == buf.len(), // a partial frame: the connection is unusable
                Err(e) => e.kind() == ErrorKind::WouldBlock, // drop this update for it
            }
        });
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name}: cannot read {v:?}");
                std::process::exit(2)
            })
        })
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let host: String = arg(&args, "--host", "127.0.0.1".to_string());
    let port: u16 = arg(&args, "--port", 0);
    let symbols: u32 = arg(&args, "--symbols", 1000);
    let rate: f64 = arg(&args, "--rate", 1000.0);
    if symbols == 0 || !(rate > 0.0 && rate.is_finite()) {
        eprintln!("--symbols must be > 0 and --rate > 0");
        std::process::exit(2);
    }
    let listener = TcpListener::bind((host.as_str(), port))?;
    println!("listening on ws://{host}:{}/ws", listener.local_addr()?.port());
    std::io::stdout().flush()?;

    let mut conn_tx = Vec::new();
    let mut quote_tx = Vec::new();
    for i in 0..WRITERS {
        let (ct, cr) = mpsc::channel();
        let (qt, qr) = mpsc::channel();
        conn_tx.push(ct);
        quote_tx.push(qt);
        std::thread::Builder::new()
            .name(format!("floor-writer-{i}"))
            .spawn(move || writer(cr, qr))?;
    }
    // The feed: open-loop, round-robin, every 1 ms.
    std::thread::Builder::new().name("floor-feed".into()).spawn(move || {
        let (start, start_ns) = (Instant::now(), now_ns());
        let mut seq = vec![0u64; symbols as usize];
        let mut emitted = 0u64;
        loop {
            std::thread::sleep(Duration::from_millis(1));
            // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
            let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            while emitted < due {
                let sym = (emitted % u64::from(symbols)) as u32;
                seq[sym as usize] += 1;
                let q = Quote {
                    sym,
                    seq: seq[sym as usize],
                    mid: 10_000 + u64::from(sym),
                    t: start_ns + (emitted as f64 * 1e9 / rate) as u64,
                    ti: now_ns(),
                };
                for tx in &quote_tx {
                    let _ = tx.send(q.clone());
                }
                emitted += 1;
            }
        }
    })?;
    // SIGTERM/SIGINT end the process with their default action (status
    // 128 + n); the harness only needs the process gone.
    let sessions = Arc::new(AtomicU64::new(0));
    let mut acceptors = Vec::new();
    for i in 0..ACCEPTORS {
        let (listener, sessions, conn_tx) =
            (listener.try_clone()?, sessions.clone(), conn_tx.clone());
        acceptors.push(std::thread::Builder::new().name(format!("floor-accept-{i}")).spawn(
            move || {
                for sock in listener.incoming() {
                    let Ok(sock) = sock else { continue };
                    let session = sessions.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(c) = open(sock, session) {
                        let _ = conn_tx[session as usize % WRITERS].send(c);
                    }
                }
            },
        )?);
    }
    for a in acceptors {
        let _ = a.join();
    }
    Ok(())
}
