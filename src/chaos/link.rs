//! A faulty network link for chaos tests: a TCP forwarder on 127.0.0.1 between a worker
//! and its coordinator that can be stalled (bytes held back both ways, connections kept:
//! a hung peer, a congested path) or cut (every connection closed and new ones refused
//! at once: a partition, a dead host), and healed again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a link does to its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forwards both ways.
    Open,
    /// Forwards nothing, keeps its connections: bytes wait until it opens again.
    Stalled,
    /// Closes every connection and refuses new ones.
    Cut,
}

/// A forwarder from its own address to a target; dropped, it closes everything.
#[derive(Debug)]
pub struct FaultyLink {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    accepting: JoinHandle<()>,
}

impl FaultyLink {
    /// A link to `target`, open, listening on a port of 127.0.0.1 of its own.
    ///
    /// # Errors
    /// No port could be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultyLink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watching) = watch::channel(LinkMode::Open);
        let accepting = tokio::spawn(accept(listener, target, watching));
        Ok(FaultyLink {
            addr,
            mode,
            accepting,
        })
    }

    /// Where a peer connects to go through the link.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the link does from now on.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        // The connections' pumps end when the mode's sender goes.
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<LinkMode>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if *mode.borrow() == LinkMode::Cut {
            continue; // refused: dropped at once
        }
        tokio::spawn(forward(inbound, target, mode.clone()));
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, mode: watch::Receiver<LinkMode>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, mode.clone()),
        pump(out_read, in_write, mode)
    );
}

/// Copies `from` to `to` while the link is open; holds off while it is stalled; ends
/// (closing `to`) at the end of `from`, on a cut, or when the link is dropped. Bytes read
/// just as the link stalls are held with the rest: they are written only once it opens.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<LinkMode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while open(&mut mode).await {
        let read = tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            // Reading is cancel safe: bytes not read when the mode changes stay in the
            // socket.
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !open(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the link is stalled: `true` once it is open, `false` when it is cut or
/// dropped.
async fn open(mode: &mut watch::Receiver<LinkMode>) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            LinkMode::Open => return true,
            LinkMode::Cut => return false,
            LinkMode::Stalled => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut got = vec![0u8; text.len()];
        stream.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_link_forwards_holds_back_while_stalled_and_closes_when_cut() {
        let link = FaultyLink::start(echo().await).await.unwrap();
        let mut stream = TcpStream::connect(link.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"open").await.unwrap(), b"open");

        link.set(LinkMode::Stalled);
        stream.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            stream.read_exact(&mut got),
        )
        .await;
        assert!(early.is_err(), "nothing passes a stalled link");
        link.set(LinkMode::Open);
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held", "what was held back arrives once it opens");

        link.set(LinkMode::Cut);
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(read, 0, "a cut link closes its connections");
        let mut again = TcpStream::connect(link.addr()).await.unwrap();
        assert!(
            round_trip(&mut again, b"x").await.is_err(),
            "a cut link refuses"
        );

        link.set(LinkMode::Open);
        let mut healed = TcpStream::connect(link.addr()).await.unwrap();
        assert_eq!(round_trip(&mut healed, b"back").await.unwrap(), b"back");
    }
}
