//! A TCP proxy a test puts between the service and a server, to cut the
//! service's connections at a moment it chooses (mid-transaction, mid-
//! stream) or refuse new ones for a while.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    /// Each cut bumps the generation; connections of older ones close.
    generation: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (generation, _) = watch::channel(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let generation = generation.clone();
            let down = down.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        let _ = client.shutdown().await;
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut cut = generation.subscribe();
                    let born = *cut.borrow();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.wait_for(|g| *g != born) => {}
                        }
                        // Dropping both sockets cuts the connection.
                    });
                }
            })
        };
        Proxy {
            port,
            generation,
            down,
            accepted,
            task,
        }
    }

    /// Cuts every connection open now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// While down, new connections are closed at once; going down cuts the
    /// open ones.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
