//! A container's stdio, owned by its shim, and the attach protocol the
//! shim serves on a Unix socket: every message, both ways, is
//! `[kind u8][length u32 BE][data]`:
//! - shim → client: kind 1 stdout, 2 stderr (output from the moment of
//!   attaching; earlier output is in the log, as upstream);
//! - client → shim: kind 0 stdin, 1 close stdin, 4 resize (width and
//!   height as u16 BE).
//!
//! With `stdinOnce` the container's stdin is closed when the first session
//! that wrote to it ends, as upstream's runtimes do. The kubelet API's side
//! of attach is `streaming::attach`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};

/// The container's stdio options (from its spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioOpts {
    /// Keep stdin open for attach (`stdin: true`).
    pub stdin: bool,
    /// Close stdin after the first attach session (`stdinOnce`).
    pub stdin_once: bool,
    /// Give the container a terminal (`tty: true`).
    pub tty: bool,
}

/// The attach socket of container `id`: short, under /run, because Unix
/// socket paths are limited to 108 bytes and data dirs can be deep.
pub fn socket_path(id: &str) -> PathBuf {
    // FNV-1a: a stable short name for the id.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    PathBuf::from(format!("/run/r8s/attach/{h:016x}.sock"))
}

pub(crate) const KIND_STDIN: u8 = 0;
pub(crate) const KIND_CLOSE: u8 = 1;
pub(crate) const KIND_RESIZE: u8 = 4;

pub(crate) fn encode(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.push(kind);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Splits complete messages off the front of `buf`.
pub(crate) fn decode(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 5 {
            return out;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return out;
        }
        let kind = buf[0];
        let data = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        out.push((kind, data));
    }
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    wrote_stdin: bool,
}

/// The shim's side: the listener and the attached clients, serviced from
/// the shim's single-threaded poll loop.
pub struct Sessions {
    listener: Option<(UnixListener, PathBuf)>,
    clients: Vec<Client>,
    stdin: Option<OwnedFd>,
    master: Option<OwnedFd>,
    opts: StdioOpts,
}

impl Sessions {
    /// Listens on `socket` (when given) for sessions on this stdio.
    pub fn new(
        socket: Option<&Path>,
        stdin: Option<OwnedFd>,
        master: Option<OwnedFd>,
        opts: StdioOpts,
    ) -> Sessions {
        let listener = socket.and_then(|p| {
            if let Some(d) = p.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            let _ = std::fs::remove_file(p);
            let l = UnixListener::bind(p)
                .inspect_err(
                    |e| tracing::warn!(path = %p.display(), error = %e, "no attach socket"),
                )
                .ok()?;
            let _ = l.set_nonblocking(true);
            Some((l, p.to_path_buf()))
        });
        Sessions {
            listener,
            clients: Vec::new(),
            stdin,
            master,
            opts,
        }
    }

    /// What to poll: the listener, then each client.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut v = Vec::new();
        if let Some((l, _)) = &self.listener {
            v.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.clients {
            v.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
        }
        v
    }

    /// Handles what `poll` found ready (in [`Sessions::poll_fds`] order).
    pub fn service(&mut self, ready: &[bool]) {
        let mut i = 0;
        if self.listener.is_some() {
            if ready.first() == Some(&true) {
                self.accept();
            }
            i = 1;
        }
        let n = self.clients.len().min(ready.len().saturating_sub(i));
        let mut gone = Vec::new();
        for (k, r) in ready[i..i + n].iter().enumerate() {
            if *r && !self.read_client(k) {
                gone.push(k);
            }
        }
        for k in gone.into_iter().rev() {
            let c = self.clients.remove(k);
            if c.wrote_stdin && self.opts.stdin_once {
                self.close_stdin();
            }
        }
    }

    fn accept(&mut self) {
        let Some((l, _)) = &self.listener else { return };
        while let Ok((sock, _)) = l.accept() {
            let _ = sock.set_nonblocking(false);
            let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
            self.clients.push(Client {
                sock,
                inbuf: Vec::new(),
                wrote_stdin: false,
            });
        }
    }

    /// Reads one client's input; false when it is gone.
    fn read_client(&mut self, k: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let n = match self.clients[k].sock.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        self.clients[k].inbuf.extend_from_slice(&buf[..n]);
        let msgs = decode(&mut self.clients[k].inbuf);
        for (kind, data) in msgs {
            match kind {
                KIND_STDIN => {
                    self.clients[k].wrote_stdin = true;
                    if let Some(fd) = &self.stdin
                        && write_all(fd, &data).is_err()
                    {
                        self.stdin = None;
                    }
                }
                KIND_CLOSE => self.close_stdin(),
                KIND_RESIZE if data.len() == 4 => {
                    if let Some(m) = &self.master {
                        let ws = libc::winsize {
                            ws_col: u16::from_be_bytes([data[0], data[1]]),
                            ws_row: u16::from_be_bytes([data[2], data[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ on the terminal master we own.
                        unsafe {
                            libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws);
                        }
                    }
                }
                _ => {}
            }
        }
        true
    }

    fn close_stdin(&mut self) {
        if self.opts.tty {
            // A terminal's end of input is ^D; the master stays open for
            // output.
            if let Some(fd) = &self.stdin {
                let _ = write_all(fd, &[4]);
            }
        }
        self.stdin = None;
    }

    /// Sends output to every attached client, dropping the ones that
    /// cannot keep up.
    pub fn broadcast(&mut self, stream: &str, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let kind = if stream == "stderr" { 2 } else { 1 };
        let msg = encode(kind, data);
        self.clients.retain_mut(|c| c.sock.write_all(&msg).is_ok());
    }

    /// Ends every session (the container has exited) and removes the socket.
    pub fn close(&mut self) {
        for c in self.clients.drain(..) {
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        if let Some((_, p)) = self.listener.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives the one file descriptor a peer sends with SCM_RIGHTS.
pub(crate) fn recv_fd(sock: &std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(std::io::Error::other("no terminal descriptor received"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_wait_for_whole_frames() {
        let mut buf = encode(1, b"hello");
        buf.extend(encode(4, &[0, 80, 0, 24]));
        let tail = buf.split_off(buf.len() - 2);
        let got = decode(&mut buf);
        assert_eq!(got, vec![(1, b"hello".to_vec())]);
        buf.extend(tail);
        assert_eq!(decode(&mut buf), vec![(4, vec![0, 80, 0, 24])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn socket_paths_are_short_and_stable() {
        let id = format!("{}-{}-3", "f".repeat(36), "c".repeat(63));
        let p = socket_path(&id);
        assert_eq!(p, socket_path(&id));
        assert!(p.as_os_str().len() < 60, "{}", p.display());
        assert_ne!(p, socket_path("other"));
    }

    #[test]
    fn sessions_feed_stdin_and_broadcast_output() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("a.sock");
        let (r, w) = nix::unistd::pipe().unwrap();
        let opts = StdioOpts {
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        let mut s = Sessions::new(Some(&sock), Some(w), None, opts);
        let mut c = UnixStream::connect(&sock).unwrap();
        s.service(&[true]);
        assert_eq!(s.clients.len(), 1);
        c.write_all(&encode(KIND_STDIN, b"typed\n")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.service(&[false, true]);
        let mut got = [0u8; 6];
        nix::unistd::read(r.as_raw_fd(), &mut got).unwrap();
        assert_eq!(&got, b"typed\n");
        s.broadcast("stderr", b"oops");
        let mut head = [0u8; 9];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, &[2, 0, 0, 0, 4, b'o', b'o', b'p', b's']);
        // The session that wrote ends: stdinOnce closes stdin (EOF).
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
        s.service(&[false, true]);
        assert!(s.stdin.is_none());
        let mut rest = [0u8; 1];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut rest).unwrap(), 0);
    }
}
