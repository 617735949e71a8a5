//! A TCP proxy in front of the test's nats-server, to cut the network between
//! one `baton` process and NATS without either of them noticing a close.
//!
//! Semantics, chosen to behave like a pulled cable rather than a crash:
//!
//! - [`Proxy::cut`] makes the proxy a black hole. No byte moves in either
//!   direction, and no socket is closed: nats-server keeps the connection
//!   (and the client's subscriptions), so a request to the cut-off client
//!   times out instead of finding no responders. The proxy stops reading, so
//!   what either side sends waits in socket buffers, as unacknowledged TCP
//!   segments wait in the sender. Connections accepted during a cut are held
//!   silent too: nothing is dialled upstream until the heal, so a
//!   reconnecting client hears no INFO.
//! - [`Proxy::heal`] resumes forwarding. What was held is delivered late and
//!   in order, as TCP retransmits it once the cable is back (before either
//!   side gave up on the connection): the broker sees a burst of old
//!   heartbeats, the subagent a burst of old broker heartbeats and requests.
//!   Nothing is lost and nothing is reordered, so the NATS protocol stream
//!   stays intact.
//! - [`Proxy::reset`] closes every connection, held or not (cut or not), as
//!   when one side gave up on it; clients reconnect through the proxy (held
//!   silent while it is cut).
//! - [`Proxy::refuse`] closes every connection and, until
//!   [`Proxy::accept`], closes each new one at once, as a middlebox reset, a
//!   server dropping a slow consumer, or a dead NATS node would: the server
//!   forgets the client's subscriptions, so a request to it finds no
//!   responders, while the client itself lives on and keeps reconnecting.
//! - Dropping the proxy stops it and closes every connection.
//!
//! Bytes being written at the very instant of a cut may still arrive, like
//! bits already on the wire.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes moved per read.
const CHUNK: usize = 16 * 1024;

/// What every connection obeys.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    cut: bool,
    /// New connections are closed at once.
    refusing: bool,
    /// Bumped by [`Proxy::reset`]: connections of an older epoch close.
    epoch: u64,
}

/// A proxy listening on 127.0.0.1 (random port) that forwards to one server.
pub struct Proxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream`, a `nats://host:port` URL or a
    /// `host:port` address.
    pub async fn start(upstream: &str) -> io::Result<Proxy> {
        let target = upstream.strip_prefix("nats://").unwrap_or(upstream);
        let upstream = tokio::net::lookup_host(target)
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("no address for {target}")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, watching) = watch::channel(State::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, watching));
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// The URL to give a `baton` process instead of the server's.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops forwarding in both directions, keeping every socket open.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cut = true);
    }

    /// Resumes forwarding; bytes held during the cut arrive now, in order.
    pub fn heal(&self) {
        self.state.send_modify(|s| s.cut = false);
    }

    /// Closes every connection through the proxy; a cut stays in force.
    pub fn reset(&self) {
        self.state.send_modify(|s| s.epoch += 1);
    }

    /// Closes every connection and refuses new ones until [`Proxy::accept`].
    pub fn refuse(&self) {
        self.state.send_modify(|s| {
            s.refusing = true;
            s.epoch += 1;
        });
    }

    /// Accepts connections again after [`Proxy::refuse`].
    pub fn accept(&self) {
        self.state.send_modify(|s| s.refusing = false);
    }

    pub fn is_cut(&self) -> bool {
        self.state.borrow().cut
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // the accept task owns every connection task: aborting it drops them all
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: watch::Receiver<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    let _ = client.set_nodelay(true);
                    connections.spawn(connection(client, upstream, state.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One client connection: held silent while cut, then piped to `upstream`
/// until either side closes or the proxy resets.
async fn connection(client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    let (epoch, refusing) = {
        let s = state.borrow();
        (s.epoch, s.refusing)
    };
    if refusing {
        return;
    }
    if !open(&mut state, epoch).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // when one direction ends, both sockets close
    tokio::select! {
        _ = pump(client_read, server_write, state.clone(), epoch) => {}
        _ = pump(server_read, client_write, state, epoch) => {}
    }
}

/// Copies bytes from one socket to the other while the proxy is not cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if !open(&mut state, epoch).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // cut while waiting for bytes: stop reading (reads are cancel-safe)
            () = stopped(&mut state, epoch) => continue,
        };
        // bytes read just before a cut are held until the heal
        if !open(&mut state, epoch).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits until the proxy forwards; false when the connection must close
/// (reset, or the proxy is gone).
async fn open(state: &mut watch::Receiver<State>, epoch: u64) -> bool {
    state
        .wait_for(|s| !s.cut || s.epoch != epoch)
        .await
        .map(|s| s.epoch == epoch)
        .unwrap_or(false)
}

/// Resolves when the proxy stops forwarding for this connection.
async fn stopped(state: &mut watch::Receiver<State>, epoch: u64) {
    let _ = state.wait_for(|s| s.cut || s.epoch != epoch).await;
}
