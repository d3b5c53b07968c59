//! A TCP pass-through proxy on 127.0.0.1 that cuts connections: it forwards bytes both ways
//! unchanged (TLS stays end to end between the agent and the server) and shuts both sockets
//! of a connection down the first times its server→client stream passes a given length.
//! It counts the bytes it forwarded to the client, so a test sees whether a cut download
//! resumed or started over.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// What the accept loop and the pumps share.
struct Shared {
    upstream: SocketAddr,
    /// A connection's server→client bytes at which it is cut.
    cut_after: u64,
    /// Cuts still to make.
    cuts_left: AtomicUsize,
    cuts: AtomicUsize,
    /// Server→client bytes forwarded, over all connections.
    downstream: AtomicU64,
    stop: AtomicBool,
    /// Every socket opened, shut down when the proxy is dropped.
    sockets: Mutex<Vec<TcpStream>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Takes one cut of the budget, if any is left.
    fn take_cut(&self) -> bool {
        self.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The proxy; it stops, and ends every connection it holds, when dropped.
pub struct CuttingProxy {
    pub url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Forwards 127.0.0.1:<port> to `upstream` (scheme `scheme`), cutting the first
    /// `cuts` connections whose server→client stream passes `cut_after` bytes.
    pub fn start(scheme: &str, upstream: SocketAddr, cut_after: u64, cuts: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            cut_after,
            cuts_left: AtomicUsize::new(cuts),
            cuts: AtomicUsize::new(0),
            downstream: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    connect(&accepting, client);
                }
            }
        });
        CuttingProxy {
            url: format!("{scheme}://{addr}/"),
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Server→client bytes forwarded, over all connections.
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.downstream.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let pumps = std::mem::take(&mut *self.shared.pumps.lock().unwrap());
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

/// Connects `client` to the upstream server and starts a pump each way.
fn connect(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(server) = TcpStream::connect(shared.upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client2), Ok(server2), Ok(client3), Ok(server3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    shared.sockets.lock().unwrap().extend([client3, server3]);
    let (up, down) = (shared.clone(), shared.clone());
    let pumps = [
        thread::spawn(move || pump(client, server, &up, false)),
        thread::spawn(move || pump(server2, client2, &down, true)),
    ];
    shared.pumps.lock().unwrap().extend(pumps);
}

/// Copies `from` to `to` until either side ends; on the server→client side (`downstream`)
/// counts the bytes and, while the budget lasts, cuts the connection (both sockets shut
/// down) once `cut_after` bytes went through it.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, downstream: bool) {
    let mut buf = vec![0u8; 16 << 10];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = shared.cut_after.saturating_sub(sent);
        let cut = downstream && room > 0 && n as u64 > room && shared.take_cut();
        let forward = if cut {
            usize::try_from(room).unwrap_or(n)
        } else {
            n
        };
        if to.write_all(&buf[..forward]).is_err() {
            break;
        }
        sent += forward as u64;
        if downstream {
            shared
                .downstream
                .fetch_add(forward as u64, Ordering::SeqCst);
        }
        if cut {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
