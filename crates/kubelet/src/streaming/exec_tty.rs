//! `exec` with `tty=true`: the command gets a terminal. libcontainer opens
//! the pty inside the container (so `tty` names a `/dev/pts` path there),
//! makes it the process's controlling terminal and hands the master to us
//! over a Unix socket; we copy it to and from channel 1 (stdout, which
//! carries stderr too on a terminal) and channel 0 (stdin), and apply the
//! channel 4 resize messages (`{"Width":..,"Height":..}`) to it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::exec::{ExecCtx, ExecRequest, frame, status};
use crate::runtime::stdio::recv_fd;

/// How long the runtime may take to hand over the terminal.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output may keep coming after the command exited (a background
/// process can hold the terminal open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take to end after its client left and its
/// terminal was hung up.
const HANGUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Two non-blocking, reactor-driven copies of the terminal's master.
fn pty_halves(
    master: &OwnedFd,
) -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    // The flag belongs to the open file, so every copy shares it.
    let flags = OFlag::from_bits_truncate(fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).ok()?);
    fcntl(
        master.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )
    .ok()?;
    let dup = || master.try_clone().map(std::fs::File::from).ok();
    // A pty master is pollable like a pipe; tokio's pipe types only insist
    // on the file being non-blocking, which it now is.
    let reader = tokio::net::unix::pipe::Receiver::from_file_unchecked(dup()?).ok()?;
    let writer = tokio::net::unix::pipe::Sender::from_file_unchecked(dup()?).ok()?;
    Some((reader, writer))
}

/// Sets the terminal's size.
fn resize(master: &OwnedFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// Parses a channel 4 message.
fn parse_resize(b: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let w = u16::try_from(v["Width"].as_u64()?).ok()?;
    let h = u16::try_from(v["Height"].as_u64()?).ok()?;
    Some((w, h))
}

async fn fail<S>(tx: &mut S, msg: String)
where
    S: futures::Sink<Message> + Unpin,
{
    let st =
        json!({"metadata": {}, "status": "Failure", "message": msg, "reason": "InternalError"});
    let _ = tx.send(frame(3, st.to_string().as_bytes())).await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tx.close().await;
}

/// Runs a tty exec session on an accepted WebSocket.
pub(crate) async fn run<T, R>(mut tx: T, mut rx: R, ctx: ExecCtx, req: ExecRequest)
where
    T: futures::Sink<Message> + Unpin + Send + 'static,
    R: futures::Stream<Item = Message> + Unpin + Send + 'static,
{
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "r8s-tty-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => return fail(&mut tx, format!("console socket: {e}")).await,
    };
    let mut cmd = tokio::process::Command::new(&ctx.shim_exe);
    cmd.env(crate::HELPER_ENV.0, crate::HELPER_ENV.1);
    cmd.arg("shim-exec")
        .arg("--root")
        .arg(&ctx.state_root)
        .arg("--id")
        .arg(&req.id)
        .arg("--")
        .args(&req.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("R8S_LOG", "error")
        .env(crate::shim::CONSOLE_SOCKET_ENV, &path);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return fail(&mut tx, format!("starting exec: {e}")).await;
        }
    };
    let mut stderr = child.stderr.take();
    let handover = async {
        let (stream, _) = listener.accept().await?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        tokio::task::spawn_blocking(move || recv_fd(&stream))
            .await
            .map_err(std::io::Error::other)?
    };
    let master = tokio::select! {
        m = tokio::time::timeout(HANDOVER_TIMEOUT, handover) => match m {
            Ok(Ok(m)) => Some(m),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no terminal from the runtime");
                None
            }
            Err(_) => None,
        },
        _ = child.wait() => None,
    };
    let _ = std::fs::remove_file(&path);
    let Some(master) = master else {
        let _ = child.start_kill();
        let mut why = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut why)).await;
        }
        let _ = child.wait().await;
        return fail(
            &mut tx,
            format!("starting a terminal for exec: {}", why.trim()),
        )
        .await;
    };
    // Separate, non-blocking descriptors driven by the reactor: a read
    // waiting for output must not hold up input, and dropping them must
    // close them at once (a read parked on the blocking pool would keep
    // the terminal open, and a departed client's shell would never get its
    // SIGHUP).
    let Some((mut reader, mut writer)) = pty_halves(&master) else {
        let _ = child.start_kill();
        return fail(&mut tx, "duplicating the terminal".into()).await;
    };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(16);
    let output = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // EIO once every slave is closed: the command is gone.
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out_tx.send(frame(1, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stdin = req.stdin;
    // Ends only when the client does: a terminal that can no longer be
    // written (the command is gone) just stops taking input.
    let mut input = tokio::spawn(async move {
        let mut writable = true;
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
                0 if stdin && writable => {
                    writable = writer.write_all(rest).await.is_ok() && writer.flush().await.is_ok();
                }
                4 => {
                    if let Some((w, h)) = parse_resize(rest) {
                        resize(&master, w, h);
                    }
                }
                _ => {}
            }
        }
    });
    // Output goes out as it comes until the command exits; what it left
    // in the terminal follows, for a short while.
    let mut exited = None;
    let mut output_open = true;
    let mut client_gone = false;
    while exited.is_none() && !client_gone {
        tokio::select! {
            m = out_rx.recv(), if output_open => match m {
                Some(m) => {
                    if tx.send(m).await.is_err() {
                        client_gone = true;
                    }
                }
                None => output_open = false,
            },
            st = child.wait() => exited = Some(st),
            // The client's side ended: it is gone.
            _ = &mut input => client_gone = true,
        }
    }
    if client_gone {
        // Closing every copy of the terminal's master hangs it up: the
        // session gets SIGHUP, as a shell does when its terminal goes.
        output.abort();
        input.abort();
        drop(out_rx);
        if tokio::time::timeout(HANGUP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        return;
    }
    let code = match exited {
        Some(Ok(s)) => s.code().unwrap_or(137),
        _ => 137,
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(m) = out_rx.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    })
    .await;
    output.abort();
    input.abort();
    let _ = tx
        .send(frame(3, status(code, &req.command).as_bytes()))
        .await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_are_kubectls_json() {
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(parse_resize(b"junk"), None);
    }
}
