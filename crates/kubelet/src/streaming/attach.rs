//! `attach`: a client joins a running container's stdio (as `kubectl
//! attach` and `kubectl run -i/-it` do). The shim owns the container's
//! stdio and serves attach sessions on a Unix socket
//! (`runtime::stdio`); the kubelet API bridges a WebSocket
//! (`v5`/`v4.channel.k8s.io`, the same channels as exec) or SPDY to it.

use std::path::PathBuf;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::exec::frame;
use crate::runtime::stdio::{KIND_CLOSE, KIND_RESIZE, KIND_STDIN, decode, encode};
pub use crate::runtime::stdio::{Sessions, StdioOpts, socket_path};

/// The kubelet API's side: bridges an upgraded WebSocket to the shim's
/// attach socket until the container ends or the client leaves.
pub async fn run<S>(io: S, socket: PathBuf, protocol: String, stdin: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (tx, rx) = crate::exec::websocket_ends(ws);
    run_on(tx, rx, socket, protocol, stdin).await
}

/// Bridges channel messages (WebSocket or SPDY) to the shim's attach
/// socket.
pub async fn run_on<T, R>(mut tx: T, mut rx: R, socket: PathBuf, protocol: String, stdin: bool)
where
    T: futures::Sink<Message> + Unpin + Send + 'static,
    R: futures::Stream<Item = Message> + Unpin + Send + 'static,
{
    let sock = match tokio::net::UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e) => {
            let msg = json!({"metadata": {}, "status": "Failure",
                "message": format!("attaching to the container: {e}"), "reason": "InternalError"});
            let _ = tx.send(frame(3, msg.to_string().as_bytes())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let (mut sr, mut sw) = sock.into_split();
    let v5 = protocol.starts_with("v5");
    let input = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            let out = match ch {
                0 if stdin => encode(KIND_STDIN, rest),
                4 => match serde_json::from_slice::<serde_json::Value>(rest) {
                    Ok(v) => {
                        let w = v["Width"].as_u64().unwrap_or(0) as u16;
                        let h = v["Height"].as_u64().unwrap_or(0) as u16;
                        let mut d = w.to_be_bytes().to_vec();
                        d.extend_from_slice(&h.to_be_bytes());
                        encode(KIND_RESIZE, &d)
                    }
                    Err(_) => continue,
                },
                255 if v5 && rest.first() == Some(&0) => encode(KIND_CLOSE, &[]),
                _ => continue,
            };
            if sw.write_all(&out).await.is_err() {
                break;
            }
        }
        // The client left: the shim sees the session end.
        let _ = sw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    'out: loop {
        match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                for (kind, data) in decode(&mut pending) {
                    if tx.send(frame(kind, &data)).await.is_err() {
                        break 'out;
                    }
                }
            }
        }
    }
    let ok = json!({"metadata": {}, "status": "Success"});
    let _ = tx.send(frame(3, ok.to_string().as_bytes())).await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tx.close().await;
    input.abort();
}
