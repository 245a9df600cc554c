//! `exec` and `attach` over SPDY/3.1, as client-go's SPDY executor speaks
//! it (kubectl up to 1.29, kubectl 1.30+ with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, and the many Go tools built
//! on `remotecommand.NewSPDYExecutor`).
//!
//! The client opens one SPDY stream per standard stream, each named by its
//! `streamType` header (`error`, `stdin`, `stdout`, `stderr`, `resize`).
//! The session here waits for the streams the query asked for, then turns
//! them into the same channel messages the WebSocket protocols carry
//! (`[channel, data...]`: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize,
//! and `[255, 0]` when the client closes stdin), so `exec.rs`,
//! `exec_tty.rs` and `attach.rs` serve both transports with one code path.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::portforward::{Out, SpdyConn};
use crate::spdy::{self, Frame};

/// Stream protocols this kubelet speaks over SPDY. v5 and v4 are the same
/// on SPDY (stdin is closed by closing its stream); v3 and v2 report a
/// failure as plain text on the error stream, and v2 has no resize stream.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];

/// How long the client may take to open the streams it asked for
/// (upstream's `streamCreationTimeout`).
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The first protocol the client offers that this kubelet speaks, as
/// upstream's `httpstream.Handshake` picks it.
pub fn negotiate(offered: &[String]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().copied().find(|p| p == o))
}

/// The standard streams a request asked for (its query parameters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// `stdin=true`.
    pub stdin: bool,
    /// `stdout=true`.
    pub stdout: bool,
    /// `stderr=true` (never with a terminal: it merges into stdout).
    pub stderr: bool,
    /// `tty=true`: a resize stream too, from v3 on.
    pub tty: bool,
}

impl Wanted {
    /// Reads the standard-stream flags from a query string.
    pub fn from_query(query: &str) -> Wanted {
        let mut w = Wanted::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let on = v == "true" || v == "1";
            match k.as_ref() {
                // The API server's names, and a kubelet's (`input`,
                // `output`, `error`), as upstream's kubelet reads them.
                "stdin" | "input" => w.stdin = on,
                "stdout" | "output" => w.stdout = on,
                "stderr" | "error" => w.stderr = on,
                "tty" => w.tty = on,
                _ => {}
            }
        }
        if w.tty {
            w.stderr = false;
        }
        w
    }

    fn expected(&self, protocol: &str) -> Vec<&'static str> {
        let mut v = vec!["error"];
        if self.stdin {
            v.push("stdin");
        }
        if self.stdout {
            v.push("stdout");
        }
        if self.stderr {
            v.push("stderr");
        }
        if self.tty && protocol != "v2.channel.k8s.io" {
            v.push("resize");
        }
        v
    }
}

/// Channel messages to the client (what the session writes out).
pub type MsgSink = fmpsc::Sender<Message>;
/// Channel messages from the client.
pub type MsgStream = fmpsc::Receiver<Message>;

/// Runs the SPDY session on an upgraded connection: waits for the client's
/// streams, then returns the two ends the exec or attach code uses. The
/// session runs on until the code closes its sink (or sends a close
/// message) or the client goes away.
pub async fn accept<S>(
    io: S,
    protocol: &'static str,
    wanted: Wanted,
) -> Result<(MsgSink, MsgStream), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let SpdyConn {
        out_tx,
        mut in_rx,
        reader,
        writer,
    } = SpdyConn::start(io, 64);
    let expected = wanted.expected(protocol);
    let mut streams: HashMap<&'static str, u32> = HashMap::new();
    // Frames that arrive for a stream before every stream is there (stdin
    // typed at once) are kept for the session.
    let mut early: Vec<Frame> = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    while streams.len() < expected.len() {
        let f = tokio::select! {
            f = in_rx.recv() => f,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(f) = f else {
            reader.abort();
            drop(out_tx);
            let _ = writer.await;
            return Err("the client did not open its streams".into());
        };
        match f {
            Frame::SynStream {
                stream, headers, ..
            } => {
                let kind = spdy::header(&headers, "streamtype").unwrap_or("");
                match expected.iter().find(|k| **k == kind) {
                    Some(k) if !streams.contains_key(k) => {
                        let _ = out_tx.send(Out::Reply(stream)).await;
                        streams.insert(k, stream);
                    }
                    _ => {
                        tracing::debug!(stream, kind, "rejecting an unexpected exec stream");
                        let _ = out_tx.send(Out::Rst(stream)).await;
                    }
                }
            }
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out_tx.send(Out::Ping(id)).await;
            }
            f @ Frame::Data { .. } => early.push(f),
            _ => {}
        }
    }
    let (to_code, from_client) = fmpsc::channel::<Message>(16);
    let (to_client, from_code) = fmpsc::channel::<Message>(16);
    tokio::spawn(session(Session {
        protocol,
        streams,
        early,
        in_rx,
        out_tx,
        to_code,
        from_code,
        reader,
        writer,
    }));
    Ok((to_client, from_client))
}

struct Session {
    protocol: &'static str,
    streams: HashMap<&'static str, u32>,
    early: Vec<Frame>,
    in_rx: mpsc::Receiver<Frame>,
    out_tx: mpsc::Sender<Out>,
    to_code: fmpsc::Sender<Message>,
    from_code: fmpsc::Receiver<Message>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

fn message(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// What the error stream carries: the `metav1.Status` as JSON from v4 on;
/// before, a failure's message as text and nothing for success.
fn error_payload(protocol: &str, status: &[u8]) -> Option<Bytes> {
    if matches!(protocol, "v5.channel.k8s.io" | "v4.channel.k8s.io") {
        return Some(Bytes::copy_from_slice(status));
    }
    let v: serde_json::Value = serde_json::from_slice(status).ok()?;
    if v["status"] == "Success" {
        return None;
    }
    Some(Bytes::from(v["message"].as_str().unwrap_or("").to_string()))
}

/// Splits the resize stream (a sequence of JSON objects, as Go's
/// `json.Encoder` writes them) into whole objects; keeps a partial tail.
fn resize_messages(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(v)) => {
                used = it.byte_offset();
                out.push(v.to_string().into_bytes());
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Not JSON: drop what is there rather than wedge the stream.
                used = buf.len();
                break;
            }
            None => {
                used = it.byte_offset();
                break;
            }
        }
    }
    buf.drain(..used);
    out
}

/// Client → code: stdin data (and its close), resize objects, pings. It
/// runs apart from the other direction so that a client writing faster
/// than the command reads can never hold up the command's output (which
/// would deadlock a command that reads and writes a lot, as `cat` does).
async fn client_to_code(
    stdin: Option<u32>,
    resize: Option<u32>,
    early: Vec<Frame>,
    mut in_rx: mpsc::Receiver<Frame>,
    out_tx: mpsc::Sender<Out>,
    mut to_code: fmpsc::Sender<Message>,
) {
    let mut resize_buf = Vec::new();
    let mut early = early.into_iter();
    loop {
        let f = match early.next() {
            Some(f) => f,
            None => match in_rx.recv().await {
                Some(f) => f,
                None => break,
            },
        };
        match f {
            Frame::Data { stream, fin, data } if Some(stream) == stdin => {
                if !data.is_empty() && to_code.send(message(0, &data)).await.is_err() {
                    break;
                }
                if fin && to_code.send(message(255, &[0])).await.is_err() {
                    break;
                }
            }
            Frame::Data { stream, data, .. } if Some(stream) == resize => {
                resize_buf.extend_from_slice(&data);
                for m in resize_messages(&mut resize_buf) {
                    let _ = to_code.send(message(4, &m)).await;
                }
            }
            Frame::SynStream { stream, .. } => {
                let _ = out_tx.send(Out::Rst(stream)).await;
            }
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out_tx.send(Out::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    // The client went away: the code sees its input end.
    to_code.close_channel();
}

async fn session(s: Session) {
    let Session {
        protocol,
        streams,
        early,
        in_rx,
        out_tx,
        to_code,
        mut from_code,
        reader,
        writer,
    } = s;
    let input = tokio::spawn(client_to_code(
        streams.get("stdin").copied(),
        streams.get("resize").copied(),
        early,
        in_rx,
        out_tx.clone(),
        to_code,
    ));
    // Code → client: output and the final status.
    while let Some(m) = from_code.next().await {
        let data = match m {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&ch, rest)) = data.split_first() else {
            continue;
        };
        let target = match ch {
            1 => streams.get("stdout"),
            2 => streams.get("stderr"),
            3 => streams.get("error"),
            _ => None,
        };
        let Some(&id) = target else { continue };
        let payload = if ch == 3 {
            match error_payload(protocol, rest) {
                Some(p) => p,
                None => continue,
            }
        } else {
            Bytes::copy_from_slice(rest)
        };
        if out_tx.send(Out::Data(id, payload, false)).await.is_err() {
            break;
        }
    }
    // Done: half-close every stream (the client reads EOF on stdout and
    // stderr and the end of the error stream), then the connection.
    for id in streams.values() {
        let _ = out_tx.send(Out::Data(*id, Bytes::new(), true)).await;
    }
    input.abort();
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_clients_first_supported_protocol() {
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(&offer(&[
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "channel.k8s.io"
            ])),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offer(&["v5.channel.k8s.io", "v4.channel.k8s.io"])),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(negotiate(&offer(&["channel.k8s.io"])), None);
    }

    #[test]
    fn the_query_says_which_streams_to_wait_for() {
        let w = Wanted::from_query("command=sh&stdin=true&stdout=true&stderr=true&tty=true");
        assert!(!w.stderr, "a terminal merges stderr into stdout");
        assert_eq!(
            w.expected("v4.channel.k8s.io"),
            vec!["error", "stdin", "stdout", "resize"]
        );
        assert_eq!(
            w.expected("v2.channel.k8s.io"),
            vec!["error", "stdin", "stdout"]
        );
        let w = Wanted::from_query("command=ls&stdout=true&stderr=true");
        assert_eq!(
            w.expected("v4.channel.k8s.io"),
            vec!["error", "stdout", "stderr"]
        );
    }

    #[test]
    fn resize_objects_are_split_across_frames() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        let got = resize_messages(&mut buf);
        assert_eq!(got.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(v["Width"], 80);
        buf.extend_from_slice(br#"00,"Height":30}"#);
        let got = resize_messages(&mut buf);
        let v: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(
            (v["Width"].as_u64(), v["Height"].as_u64()),
            (Some(100), Some(30))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn older_protocols_get_the_failure_text_only() {
        let fail = br#"{"status":"Failure","message":"command terminated with non-zero exit code: exit code 3"}"#;
        assert_eq!(
            error_payload("v3.channel.k8s.io", fail).unwrap(),
            Bytes::from_static(b"command terminated with non-zero exit code: exit code 3")
        );
        assert!(error_payload("v3.channel.k8s.io", br#"{"status":"Success"}"#).is_none());
        assert_eq!(
            error_payload("v4.channel.k8s.io", fail).unwrap(),
            Bytes::copy_from_slice(fail)
        );
    }
}
