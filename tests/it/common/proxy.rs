//! A pausable TCP proxy on loopback, for fault tests: put it between a client
//! and the local server, then [`cut`](Proxy::cut) to close every connection
//! and refuse new ones (the server looks down), and [`restore`](Proxy::restore).
//! The server keeps its state, which a restart of moto would lose.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    /// `http://127.0.0.1:PORT`: give this to the client.
    pub endpoint: String,
    cut: watch::Sender<bool>,
    connections: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`).
    pub async fn start(upstream: &str) -> Proxy {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (cut, _) = watch::channel(false);
        let connections = Arc::new(AtomicU64::new(0));
        let state = cut.clone();
        let count = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *state.borrow() {
                    drop(client); // refused: closed at once
                    continue;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let mut cut = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|c| *c) => {} // dropping both ends closes them
                    }
                });
            }
        });
        Proxy {
            endpoint,
            cut,
            connections,
        }
    }

    /// Closes every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
