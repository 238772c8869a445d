//! A TCP proxy in front of a database that a test can freeze: the links it
//! carries stop moving bytes but stay open, as a half-open connection does
//! (a peer gone without a FIN or RST, a firewall that dropped its state).
//! Connections made after a freeze work.

#![allow(dead_code)] // each test crate uses a part

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct FreezingProxy {
    pub(crate) port: u16,
    /// Bumped by each freeze; links started under an older value stop.
    epoch: watch::Sender<u64>,
    /// Frozen links' sockets, kept open until the proxy goes.
    frozen: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
}

impl FreezingProxy {
    pub(crate) async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = watch::Sender::new(0u64);
        let frozen = Arc::new(Mutex::new(Vec::new()));
        let (epochs, kept) = (epoch.clone(), Arc::clone(&frozen));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut epoch = epochs.subscribe();
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let born = *epoch.borrow_and_update();
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = epoch.wait_for(|&e| e != born) => true,
                    };
                    if frozen {
                        kept.lock().unwrap().push((client, server));
                    }
                });
            }
        });
        Self { port, epoch, frozen }
    }

    /// Every link open now stops moving bytes, and stays open.
    pub(crate) fn freeze(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}
