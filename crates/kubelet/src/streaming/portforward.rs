//! `kubectl port-forward` on the kubelet: `/portForward/{ns}/{pod}[/{uid}]`
//! over
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
//!   portforward.k8s.io`): every local connection is a pair of streams
//!   (error, data) with `port` and `requestid` headers;
//! - the same SPDY byte stream inside binary WebSocket messages
//!   (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl 1.31+ through an
//!   API server that tunnels the connection as is);
//! - WebSocket `v4.channel.k8s.io` (or `v4.base64.channel.k8s.io`) with
//!   `?port=` as client libraries speak it: channel 2i carries port i's
//!   data, 2i+1 its errors.
//!
//! Each forwarded connection dials the pod's port from the host: pods are
//! reachable over the bridge, hostNetwork pods on loopback.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::spdy::{self, Frame};

/// The port-forward protocol negotiated over SPDY.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol carrying SPDY (kubectl 1.31+).
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// WebSocket channel subprotocols for client libraries, in preference order.
pub const CHANNEL_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

/// How long the two streams of one forwarded connection may be apart.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialing the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest chunk read from the pod per frame or message.
const CHUNK: usize = 32 * 1024;

/// The pod a session forwards to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the pod's ports are reached from the host.
    pub addr: String,
    /// `<name>_<namespace>`, as upstream names pods in errors.
    pub pod_full_name: String,
    /// The pod's uid.
    pub uid: String,
}

impl Target {
    fn error(&self, port: u16, e: impl std::fmt::Display) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {e}",
            self.pod_full_name, self.uid
        )
    }

    async fn dial(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        match tokio::time::timeout(
            DIAL_TIMEOUT,
            tokio::net::TcpStream::connect((self.addr.as_str(), port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(self.error(port, format!("dial tcp {}:{port}: {e}", self.addr))),
            Err(_) => Err(self.error(port, format!("dial tcp {}:{port}: timed out", self.addr))),
        }
    }
}

/// Parses `?port=` values (each may hold a comma-separated list).
pub fn parse_ports(values: &[String]) -> Result<Vec<u16>, String> {
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut out = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => return Err(format!("unable to parse \"{p}\" as a port: invalid port")),
            }
        }
    }
    Ok(out)
}

/// Picks the v4 channel subprotocol from a `Sec-WebSocket-Protocol` offer:
/// `Some("")` when none was offered (binary), `None` when nothing offered
/// is supported.
pub fn negotiate_channel(offer: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offer
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if offered.is_empty() {
        return Some("");
    }
    offered
        .iter()
        .find_map(|o| CHANNEL_PROTOCOLS.iter().copied().find(|p| p == o))
}

/// What the session writer sends.
#[derive(Debug)]
pub(crate) enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Rst(u32),
    Ping(u32),
}

/// A data stream's input side, as the session sees it.
struct DataIn {
    tx: Option<mpsc::Sender<Bytes>>,
    abort: Option<tokio::task::AbortHandle>,
}

/// Streams of one forwarded connection that are not both there yet.
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    since: Instant,
}

/// A SPDY connection's two tasks: one decodes the client's frames into
/// `in_rx` (reading is not cancel-safe, and sessions also wake up for
/// timeouts), one encodes `out_tx`'s in order. Port-forward and exec
/// sessions both run on it.
pub(crate) struct SpdyConn {
    pub(crate) out_tx: mpsc::Sender<Out>,
    pub(crate) in_rx: mpsc::Receiver<Frame>,
    pub(crate) reader: tokio::task::JoinHandle<()>,
    pub(crate) writer: tokio::task::JoinHandle<()>,
}

impl SpdyConn {
    /// Starts both tasks; `out_capacity` frames may queue for writing.
    pub(crate) fn start<S>(io: S, out_capacity: usize) -> SpdyConn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
        let (out_tx, out_rx) = mpsc::channel::<Out>(out_capacity);
        let writer = tokio::spawn(write_frames(wr, out_rx));
        let (in_tx, in_rx) = mpsc::channel::<Frame>(64);
        let reader = tokio::spawn(async move {
            let mut dec = spdy::Decoder::new();
            loop {
                match dec.read(&mut rd).await {
                    Ok(Some(f)) => {
                        if in_tx.send(f).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY connection ends");
                        return;
                    }
                }
            }
        });
        SpdyConn {
            out_tx,
            in_rx,
            reader,
            writer,
        }
    }
}

/// Serves a SPDY port-forward session on an upgraded connection until the
/// client goes away.
pub async fn serve_spdy<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let SpdyConn {
        out_tx,
        mut in_rx,
        reader,
        writer,
    } = SpdyConn::start(io, 256);
    let mut data: HashMap<u32, DataIn> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let frame = tokio::select! {
            f = in_rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = tick.tick() => {
                expire_pairs(&mut pairs, &mut data, &out_tx).await;
                while forwards.try_join_next().is_some() {}
                continue;
            }
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                let kind = spdy::header(&headers, "streamtype").unwrap_or("");
                let port = spdy::header(&headers, "port")
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p > 0);
                let (Some(port), "error" | "data") = (port, kind) else {
                    tracing::debug!(stream, ?headers, "rejecting a port-forward stream");
                    let _ = out_tx.send(Out::Rst(stream)).await;
                    continue;
                };
                // Without a request id, upstream pairs stream n (error)
                // with n+2 (data).
                let request = match spdy::header(&headers, "requestid") {
                    Some(r) => r.to_string(),
                    None if kind == "error" => stream.to_string(),
                    None => stream.saturating_sub(2).to_string(),
                };
                let pair = pairs.entry(request.clone()).or_insert_with(|| Pair {
                    port,
                    error: None,
                    data: None,
                    since: Instant::now(),
                });
                let taken = match kind {
                    "error" => pair.error.is_some(),
                    _ => pair.data.is_some(),
                };
                if taken {
                    let _ = out_tx.send(Out::Rst(stream)).await;
                    continue;
                }
                if out_tx.send(Out::Reply(stream)).await.is_err() {
                    break;
                }
                if kind == "error" {
                    pair.error = Some(stream);
                } else {
                    let (tx, rx) = mpsc::channel(64);
                    data.insert(
                        stream,
                        DataIn {
                            tx: Some(tx),
                            abort: None,
                        },
                    );
                    pair.data = Some((stream, rx));
                }
                if pair.error.is_some() && pair.data.is_some() {
                    let Some(pair) = pairs.remove(&request) else {
                        continue;
                    };
                    let (Some(err_id), Some((data_id, rx))) = (pair.error, pair.data) else {
                        continue;
                    };
                    let h = forwards.spawn(forward_pair(
                        target.clone(),
                        pair.port,
                        err_id,
                        data_id,
                        rx,
                        out_tx.clone(),
                    ));
                    if let Some(d) = data.get_mut(&data_id) {
                        d.abort = Some(h);
                    }
                }
            }
            Frame::Data {
                stream,
                fin,
                data: bytes,
            } => {
                let Some(d) = data.get_mut(&stream) else {
                    continue;
                };
                if !bytes.is_empty()
                    && let Some(tx) = &d.tx
                {
                    let sent = if d.abort.is_some() {
                        tx.send(bytes).await.is_ok()
                    } else {
                        // Not paired yet: nobody drains the queue.
                        tx.try_send(bytes).is_ok()
                    };
                    if !sent {
                        d.tx = None;
                    }
                }
                if fin {
                    d.tx = None;
                }
            }
            Frame::RstStream { stream, .. } => {
                if let Some(d) = data.remove(&stream)
                    && let Some(a) = d.abort
                {
                    a.abort();
                }
                pairs.retain(|_, p| {
                    p.error != Some(stream) && p.data.as_ref().map(|d| d.0) != Some(stream)
                });
            }
            // Echo the client's pings (odd ids); we send none of our own.
            Frame::Ping { id } if id % 2 == 1 && out_tx.send(Out::Ping(id)).await.is_err() => {
                break;
            }
            Frame::GoAway { .. } => break,
            // No flow control (spdystream does none either).
            _ => {}
        }
        // Forget the finished forwards' streams.
        data.retain(|_, d| d.abort.as_ref().is_none_or(|a| !a.is_finished()));
    }
    reader.abort();
    forwards.abort_all();
    while forwards.join_next().await.is_some() {}
    drop(out_tx);
    let _ = writer.await;
}

async fn expire_pairs(
    pairs: &mut HashMap<String, Pair>,
    data: &mut HashMap<u32, DataIn>,
    out: &mpsc::Sender<Out>,
) {
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.since.elapsed() > PAIR_TIMEOUT)
        .map(|(k, _)| k.clone())
        .collect();
    for k in expired {
        let Some(p) = pairs.remove(&k) else { continue };
        if let Some((id, _)) = &p.data {
            data.remove(id);
            let _ = out.send(Out::Rst(*id)).await;
        }
        if let Some(id) = p.error {
            let msg = format!("(request={k}) timed out waiting for streams");
            let _ = out.send(Out::Data(id, Bytes::from(msg), false)).await;
            let _ = out.send(Out::Data(id, Bytes::new(), true)).await;
        }
    }
}

/// Encodes and writes the session's frames in order (the header
/// compressor's state depends on it).
async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut enc = spdy::Encoder::new();
    let mut buf = Vec::with_capacity(CHUNK + 64);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(o) = next.take() {
            let f = match o {
                Out::Reply(stream) => Frame::SynReply {
                    stream,
                    fin: false,
                    headers: Vec::new(),
                },
                Out::Data(stream, data, fin) => Frame::Data { stream, fin, data },
                Out::Rst(stream) => Frame::RstStream {
                    stream,
                    status: spdy::CANCEL,
                },
                Out::Ping(id) => Frame::Ping { id },
            };
            if let Err(e) = enc.encode(&f, &mut buf) {
                tracing::warn!(error = %e, "encoding a port-forward frame");
                return;
            }
            if buf.len() < CHUNK {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}

/// One forwarded connection over a SPDY stream pair.
async fn forward_pair(
    target: Target,
    port: u16,
    err_id: u32,
    data_id: u32,
    mut input: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
) {
    let tcp = match target.dial(port).await {
        Ok(s) => s,
        Err(msg) => {
            tracing::debug!(port, error = %msg, "port-forward dial failed");
            let _ = out.send(Out::Data(err_id, Bytes::from(msg), false)).await;
            let _ = out.send(Out::Rst(data_id)).await;
            let _ = out.send(Out::Rst(err_id)).await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let up = async move {
        while let Some(b) = input.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        // The client is done sending: half-close towards the pod.
        let _ = w.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if out.send(Out::Data(data_id, chunk, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    let _ = out.send(Out::Data(err_id, Bytes::new(), true)).await;
    let _ = out.send(Out::Data(data_id, Bytes::new(), true)).await;
}

/// Carries a byte stream in binary WebSocket messages (kubectl's SPDY
/// tunnel): message boundaries mean nothing, a close frame is the end.
pub async fn serve_spdy_tunnel<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (local, remote) = tokio::io::duplex(256 * 1024);
    let session = tokio::spawn(serve_spdy(local, target));
    let (mut rr, mut rw) = tokio::io::split(remote);
    let inbound = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            match msg {
                Message::Binary(b) => {
                    if rw.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(_) => break,
                Message::Text(_) => {
                    tracing::debug!("text message in a SPDY tunnel");
                    break;
                }
            }
        }
        let _ = rw.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; CHUNK + 1024];
        loop {
            match rr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::binary(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = ws_tx.close().await;
    };
    tokio::join!(inbound, outbound);
    let _ = session.await;
}

/// Serves a v4 channel WebSocket port-forward: one connection per port,
/// opened right away.
pub async fn serve_channels<S>(io: S, target: Target, ports: Vec<u16>, base64: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let encode = move |ch: u8, data: &[u8]| -> Message {
        if base64 {
            let mut s = String::with_capacity(data.len() * 4 / 3 + 2);
            s.push((b'0' + ch) as char);
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(ch);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    };
    // Every channel first says which port it is for (little-endian).
    for (i, p) in ports.iter().enumerate() {
        let le = p.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if ws_tx.send(encode(ch, &le)).await.is_err() {
                return;
            }
        }
    }
    let (msg_tx, mut msg_rx) = mpsc::channel::<Message>(64);
    let mut inputs = Vec::new();
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        inputs.push(tx);
        let out = msg_tx.clone();
        let target = target.clone();
        let (data_ch, err_ch) = (2 * i as u8, 2 * i as u8 + 1);
        forwards.spawn(async move {
            let send = |ch: u8, d: &[u8]| out.send(encode(ch, d));
            match target.dial(port).await {
                Ok(tcp) => {
                    let (mut r, mut w) = tcp.into_split();
                    let mut rx = rx;
                    let up = async move {
                        while let Some(b) = rx.recv().await {
                            if w.write_all(&b).await.is_err() {
                                break;
                            }
                        }
                        let _ = w.shutdown().await;
                        std::future::pending::<()>().await
                    };
                    let down = async {
                        let mut buf = vec![0u8; CHUNK];
                        loop {
                            match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if send(data_ch, &buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                }
                Err(msg) => {
                    let _ = send(err_ch, msg.as_bytes()).await;
                }
            }
        });
    }
    drop(msg_tx);
    let b64 = base64;
    let inbound = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) if b64 => {
                    let t = t.as_bytes();
                    let Some((&ch, rest)) = t.split_first() else {
                        continue;
                    };
                    let Ok(mut d) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                        continue;
                    };
                    d.insert(0, ch.wrapping_sub(b'0'));
                    d
                }
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            if ch % 2 == 1 || rest.is_empty() {
                continue;
            }
            if let Some(tx) = inputs.get((ch / 2) as usize)
                && tx.send(Bytes::copy_from_slice(rest)).await.is_err()
            {
                continue;
            }
        }
    };
    let outbound = async {
        while let Some(m) = msg_rx.recv().await {
            if ws_tx.send(m).await.is_err() {
                return;
            }
        }
        // Every port is done.
        let _ = ws_tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
    forwards.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(
        dec: &mut spdy::Decoder,
        r: &mut tokio::io::ReadHalf<tokio::io::DuplexStream>,
    ) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), dec.read(r))
            .await
            .expect("a frame in time")
            .expect("a valid frame")
            .expect("not the end")
    }

    fn syn(stream: u32, kind: &str, port: u16, request: &str) -> Frame {
        Frame::SynStream {
            stream,
            assoc: 0,
            priority: 0,
            flags: 0,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.to_string()),
                ("requestid".into(), request.into()),
            ],
        }
    }

    #[tokio::test]
    async fn a_spdy_session_forwards_a_stream_pair_like_kubectl() {
        // An echo server that upper-cases, standing in for the pod.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let target = Target {
            addr: "127.0.0.1".into(),
            pod_full_name: "web_default".into(),
            uid: "u1".into(),
        };
        let session = tokio::spawn(serve_spdy(server, target));
        let (mut r, mut w) = tokio::io::split(client);
        let mut enc = spdy::Encoder::new();
        let mut dec = spdy::Decoder::new();
        let mut send = async |f: Frame| {
            let mut b = Vec::new();
            enc.encode(&f, &mut b).unwrap();
            w.write_all(&b).await.unwrap();
        };
        send(syn(1, "error", port, "0")).await;
        assert!(matches!(
            next(&mut dec, &mut r).await,
            Frame::SynReply { stream: 1, .. }
        ));
        send(Frame::Data {
            stream: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        send(Frame::Ping { id: 1 }).await;
        assert_eq!(next(&mut dec, &mut r).await, Frame::Ping { id: 1 });
        send(syn(3, "data", port, "0")).await;
        assert!(matches!(
            next(&mut dec, &mut r).await,
            Frame::SynReply { stream: 3, .. }
        ));
        send(Frame::Data {
            stream: 3,
            fin: false,
            data: Bytes::from_static(b"hello"),
        })
        .await;
        let mut got = Vec::new();
        let mut fins = Vec::new();
        while fins.len() < 2 {
            match next(&mut dec, &mut r).await {
                Frame::Data {
                    stream: 3,
                    data,
                    fin,
                } => {
                    got.extend_from_slice(&data);
                    if fin {
                        fins.push(3);
                    }
                }
                Frame::Data {
                    stream: 1,
                    fin: true,
                    data,
                } if data.is_empty() => fins.push(1),
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(got, b"HELLO");
        assert_eq!(fins, vec![1, 3], "error stream closed first, as upstream");

        // A closed port: the error text on the error stream, then resets.
        send(syn(5, "error", closed, "1")).await;
        assert!(matches!(
            next(&mut dec, &mut r).await,
            Frame::SynReply { stream: 5, .. }
        ));
        send(syn(7, "data", closed, "1")).await;
        assert!(matches!(
            next(&mut dec, &mut r).await,
            Frame::SynReply { stream: 7, .. }
        ));
        let Frame::Data {
            stream: 5, data, ..
        } = next(&mut dec, &mut r).await
        else {
            panic!("the error first")
        };
        let msg = String::from_utf8_lossy(&data).into_owned();
        assert!(
            msg.starts_with(&format!(
                "error forwarding port {closed} to pod web_default, uid u1:"
            )),
            "{msg}"
        );
        assert_eq!(
            next(&mut dec, &mut r).await,
            Frame::RstStream {
                stream: 7,
                status: spdy::CANCEL
            }
        );
        assert_eq!(
            next(&mut dec, &mut r).await,
            Frame::RstStream {
                stream: 5,
                status: spdy::CANCEL
            }
        );

        // A stream without a port is refused.
        send(Frame::SynStream {
            stream: 9,
            assoc: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), "data".into())],
        })
        .await;
        assert_eq!(
            next(&mut dec, &mut r).await,
            Frame::RstStream {
                stream: 9,
                status: spdy::CANCEL
            }
        );

        send(Frame::GoAway {
            last_good: 0,
            status: 0,
        })
        .await;
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn ports_come_from_every_value_and_comma_lists() {
        assert_eq!(
            parse_ports(&["80,8080".into(), "9090".into()]),
            Ok(vec![80, 8080, 9090])
        );
        assert!(parse_ports(&[]).unwrap_err().contains("is required"));
        assert!(parse_ports(&["".into()]).unwrap_err().contains("empty"));
        assert!(parse_ports(&["0".into()]).is_err());
        assert!(parse_ports(&["70000".into()]).is_err());
    }

    /// A pod port that answers what it reads, upper-cased, once.
    async fn upper_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf).await {
                        let _ = s.write_all(&buf[..n].to_ascii_uppercase()).await;
                    }
                });
            }
        });
        port
    }

    fn local_target() -> Target {
        Target {
            addr: "127.0.0.1".into(),
            pod_full_name: "web_default".into(),
            uid: "u1".into(),
        }
    }

    async fn recv(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn v4_channels_name_their_port_then_carry_its_bytes() {
        let port = upper_server().await;
        for base64 in [false, true] {
            let (client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(serve_channels(server, local_target(), vec![port], base64));
            let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            let decode = |m: Message| -> Vec<u8> {
                match m {
                    Message::Binary(b) => b.to_vec(),
                    Message::Text(t) => {
                        let t = t.as_bytes();
                        let mut d = base64::engine::general_purpose::STANDARD
                            .decode(&t[1..])
                            .unwrap();
                        d.insert(0, t[0] - b'0');
                        d
                    }
                    m => panic!("unexpected {m:?}"),
                }
            };
            let le = port.to_le_bytes();
            assert_eq!(decode(recv(&mut ws).await.unwrap()), vec![0, le[0], le[1]]);
            assert_eq!(decode(recv(&mut ws).await.unwrap()), vec![1, le[0], le[1]]);
            let hello = if base64 {
                Message::text(format!(
                    "0{}",
                    base64::engine::general_purpose::STANDARD.encode(b"hello")
                ))
            } else {
                Message::binary(b"\x00hello".to_vec())
            };
            ws.send(hello).await.unwrap();
            assert_eq!(decode(recv(&mut ws).await.unwrap()), b"\x00HELLO".to_vec());
            // The pod closed its end: the session closes normally.
            match recv(&mut ws).await {
                Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
                m => panic!("expected a close, got {m:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_websocket_tunnel_carries_spdy_split_across_messages() {
        let port = upper_server().await;
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_spdy_tunnel(server, local_target()));
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut enc = spdy::Encoder::new();
        let mut wire = Vec::new();
        enc.encode(&syn(1, "error", port, "0"), &mut wire).unwrap();
        enc.encode(&syn(3, "data", port, "0"), &mut wire).unwrap();
        enc.encode(
            &Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"tunnel"),
            },
            &mut wire,
        )
        .unwrap();
        // spdystream writes each field separately: tiny messages.
        for chunk in wire.chunks(3) {
            ws.send(Message::binary(chunk.to_vec())).await.unwrap();
        }
        let mut bytes = Vec::new();
        let mut dec = spdy::Decoder::new();
        let mut got = Vec::new();
        let mut fins = 0;
        while fins < 2 {
            match recv(&mut ws).await {
                Some(Message::Binary(b)) => bytes.extend_from_slice(&b),
                m => panic!("unexpected {m:?}"),
            }
            let mut r = &bytes[..];
            // Decode whole frames only; keep a partial one for later.
            loop {
                if r.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes([0, r[5], r[6], r[7]]) as usize;
                if r.len() < 8 + len {
                    break;
                }
                let head: [u8; 8] = r[..8].try_into().unwrap();
                match dec.decode(head, &r[8..8 + len]).unwrap() {
                    Frame::Data {
                        stream: 3,
                        data,
                        fin,
                    } => {
                        got.extend_from_slice(&data);
                        fins += usize::from(fin);
                    }
                    Frame::Data {
                        stream: 1,
                        fin: true,
                        ..
                    } => fins += 1,
                    Frame::SynReply { .. } => {}
                    f => panic!("unexpected {f:?}"),
                }
                r = &r[8 + len..];
            }
            bytes = r.to_vec();
        }
        assert_eq!(got, b"TUNNEL");
    }

    #[test]
    fn channel_protocols_follow_the_clients_order() {
        assert_eq!(
            negotiate_channel("v5.channel.k8s.io, v4.channel.k8s.io"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate_channel("v4.base64.channel.k8s.io,v4.channel.k8s.io"),
            Some("v4.base64.channel.k8s.io")
        );
        assert_eq!(negotiate_channel(""), Some(""));
        assert_eq!(negotiate_channel("v5.channel.k8s.io"), None);
    }
}
