//! `exec` over WebSocket with Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every binary message starts
//! with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (a final
//! `metav1.Status`), 4 resize, and in v5 255 to close a stream.
//!
//! The command runs through `r8s shim-exec`, a single-threaded helper
//! process that joins the container with libcontainer (see `shim.rs` for
//! why forking stays out of the agent).

use std::path::PathBuf;
use std::process::Stdio;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// Protocols this kubelet speaks, most preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Where the helper and libcontainer's state are.
#[derive(Debug, Clone)]
pub struct ExecCtx {
    /// The executable with the `shim-exec` subcommand.
    pub shim_exe: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The node's identity and paths for `/stats/summary` (the kubelet
    /// API's one shared context rides along with exec's).
    pub stats: std::sync::Arc<crate::stats::StatsCtx>,
}

/// What the client asked for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Runtime container id.
    pub id: String,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Whether stdin is attached.
    pub stdin: bool,
    /// Whether the command runs on a terminal (stderr merges into stdout,
    /// channel 4 resizes it).
    pub tty: bool,
    /// The negotiated protocol.
    pub protocol: String,
}

/// Picks the protocol from a `Sec-WebSocket-Protocol` offer.
pub fn negotiate(offer: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offer.split(',').map(str::trim).collect();
    PROTOCOLS.iter().copied().find(|p| offered.contains(p))
}

pub(crate) fn status(code: i32, command: &[String]) -> String {
    if code == 0 {
        json!({"metadata": {}, "status": "Success"}).to_string()
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string()
    }
}

pub(crate) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The two ends of a WebSocket as channel messages: what exec and attach
/// run on (the SPDY transport in `remotecommand.rs` yields the same).
pub(crate) fn websocket_ends<S>(
    ws: WebSocketStream<S>,
) -> (
    impl futures::Sink<Message> + Unpin + Send + 'static,
    impl futures::Stream<Item = Message> + Unpin + Send + 'static,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = ws.split();
    // A read error ends the client's input as a close would.
    let rx = rx.scan((), |_, m| futures::future::ready(m.ok()));
    (tx, Box::pin(rx))
}

/// Runs the exec session on an upgraded WebSocket connection.
pub async fn run<S>(io: S, ctx: ExecCtx, req: ExecRequest)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (tx, rx) = websocket_ends(ws);
    run_on(tx, rx, ctx, req).await
}

/// Runs the exec session on channel messages (WebSocket or SPDY).
pub async fn run_on<T, R>(mut tx: T, mut rx: R, ctx: ExecCtx, req: ExecRequest)
where
    T: futures::Sink<Message> + Unpin + Send + 'static,
    R: futures::Stream<Item = Message> + Unpin + Send + 'static,
{
    if req.tty {
        return crate::exec_tty::run(tx, rx, ctx, req).await;
    }
    let mut cmd = tokio::process::Command::new(&ctx.shim_exe);
    cmd.env(crate::HELPER_ENV.0, crate::HELPER_ENV.1);
    cmd.arg("shim-exec")
        .arg("--root")
        .arg(&ctx.state_root)
        .arg("--id")
        .arg(&req.id)
        .arg("--")
        .args(&req.command)
        .stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("R8S_LOG", "error");
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = json!({"metadata": {}, "status": "Failure", "message": format!("starting exec: {e}"), "reason": "InternalError"});
            let _ = tx.send(frame(3, msg.to_string().as_bytes())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(16);
    let pump = |mut r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                ch: u8,
                out: tokio::sync::mpsc::Sender<Message>| async move {
        let Some(r) = r.as_mut() else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.send(frame(ch, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let o = tokio::spawn(pump(
        stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        1,
        out_tx.clone(),
    ));
    let e = tokio::spawn(pump(
        stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        2,
        out_tx.clone(),
    ));
    drop(out_tx);
    let v5 = req.protocol.starts_with("v5");
    // Client → stdin.
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
            match ch {
                0 => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(rest).await.is_err()
                    {
                        stdin = None;
                    }
                }
                255 if v5 && rest.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
    });
    while let Some(m) = out_rx.recv().await {
        if tx.send(m).await.is_err() {
            break;
        }
    }
    // A client that left stops the pumps (the command sees a broken pipe
    // on its next write) rather than leaving them blocked for good.
    drop(out_rx);
    let _ = o.await;
    let _ = e.await;
    let code = match child.wait().await {
        Ok(s) => s.code().unwrap_or(137),
        Err(_) => 137,
    };
    let _ = tx
        .send(frame(3, status(code, &req.command).as_bytes()))
        .await;
    // A normal closure (1000): clients read a close without a code as an
    // error.
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tx.close().await;
    input.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_newest_common_protocol() {
        assert_eq!(
            negotiate("v5.channel.k8s.io, v4.channel.k8s.io"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(negotiate("v4.channel.k8s.io"), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate("channel.k8s.io"), None);
    }

    #[test]
    fn exit_codes_become_statuses() {
        assert!(status(0, &[]).contains("Success"));
        let s: serde_json::Value = serde_json::from_str(&status(3, &["false".into()])).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
