//! The relay beside a bottle that has no network: it listens on the
//! bottle's own loopback (it shares the bottle's network namespace and
//! nothing else) and carries each connection, byte for byte, to a sidecar's
//! unix socket. So `HTTPS_PROXY=http://…@127.0.0.1:3128` and the gate's
//! `insteadOf` URL work in the bottle unchanged, while the bottle has no
//! route, no gateway and no DNS server.
//!
//! `bottle sidecar relay 127.0.0.1:3128=/run/bot-bottle/egress.sock …`: one
//! `ADDRESS=SOCKET` pair per sidecar. A socket that cannot be reached closes
//! the connection: the bottle fails closed.

use std::path::PathBuf;

use bottle_core::sidecar::{RelayPair, SidecarProcess};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Runs the relay for `pairs`; returns the exit code.
pub fn main(pairs: Vec<RelayPair>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("relay: error: cannot start the async runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(run(pairs)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("relay: error: {err}");
            1
        }
    }
}

async fn run(pairs: Vec<RelayPair>) -> Result<(), String> {
    let mut listeners = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let listener =
            TcpListener::bind(pair.listen).await.map_err(|err| format!("cannot listen on {}: {err}", pair.listen))?;
        listeners.push((listener, pair.socket.clone()));
    }
    let shown: Vec<String> = pairs.iter().map(|p| format!("{} → unix:{}", p.listen, p.socket.display())).collect();
    eprintln!("{}", SidecarProcess::Relay.ready_line(&shown.join(", ")));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| format!("cannot install the SIGTERM handler: {err}"))?;
    let serving: Vec<_> =
        listeners.into_iter().map(|(listener, socket)| tokio::spawn(serve(listener, socket))).collect();
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for task in serving {
        task.abort();
    }
    Ok(())
}

async fn serve(listener: TcpListener, socket: PathBuf) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("relay: warning: accepting a connection failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(carry(stream, socket));
    }
}

/// Joins one bottle connection to its sidecar until either side closes.
async fn carry(mut stream: TcpStream, socket: PathBuf) {
    let _ = stream.set_nodelay(true);
    match UnixStream::connect(&socket).await {
        Ok(mut sidecar) => {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut sidecar).await;
        }
        Err(err) => eprintln!("relay: warning: {} does not answer: {err}", socket.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_carried_to_the_socket_and_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let sidecar = tokio::net::UnixListener::bind(&path).expect("bind unix");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, path.clone()));
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut conn, _) = sidecar.accept().await.expect("accept");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await.expect("read");
            conn.write_all(&[buf, *b"back"].concat()).await.expect("write");
        });
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"ping").await.expect("write");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"pingback");
        // With the sidecar gone, a connection is closed at once: fail closed.
        drop(std::fs::remove_file(&path));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut got = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut got)).await;
        assert!(matches!(read, Ok(Ok(0))), "closed without a byte: {read:?}");
    }
}
