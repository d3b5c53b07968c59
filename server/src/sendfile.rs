//! Zero-copy file bodies on plain HTTP: `sendfile(2)` from the page cache to the socket.
//!
//! hyper writes every body through the connection's `AsyncWrite`; it cannot hand a file
//! descriptor to the kernel. So on a plain-TCP connection a file body yields *placeholder*
//! frames — slices of one static buffer that is never written to the socket — and queues the
//! file range each frame stands for ([`Pending`]). [`SendfileIo`], the connection's I/O,
//! recognises a placeholder by its address and answers that write with `sendfile` from the
//! queued range instead. The bytes thus go from the page cache to the socket without being
//! read into user space (nginx's `sendfile on`).
//!
//! Invariants that keep a placeholder from ever reaching a client:
//! - hyper's write strategy is forced to *queue* (`writev`), which hands body buffers to the
//!   I/O as they are and never copies them into its own buffer (`server::http1_builder`);
//! - placeholders exist only inside a task running [`zero_copy`] (plain TCP), whose I/O is a
//!   [`SendfileIo`]; under TLS there is no queue and file bodies carry real bytes;
//! - every placeholder write must match the front of the queue exactly (position inside the
//!   frame and the length left), or the write fails and the connection is closed.
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use hyper::body::Bytes;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Largest placeholder frame, in bytes.
pub const MAX_FRAME: usize = 1024 * 1024;

/// The placeholder bytes; zeroed, in `.bss`, never sent.
static PLACEHOLDER: [u8; MAX_FRAME] = [0; MAX_FRAME];

tokio::task_local! {
    static PENDING: Pending;
}

/// One placeholder frame: `len` bytes of `file` from `offset`, `done` of them sent.
#[derive(Debug)]
struct Job {
    file: Arc<File>,
    offset: u64,
    len: usize,
    done: usize,
}

/// The file ranges a connection owes its socket, in the order hyper will write them.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<VecDeque<Job>>>);

impl Pending {
    /// The queue of the connection the current task serves, if it serves plain TCP.
    pub fn current() -> Option<Pending> {
        PENDING.try_with(Clone::clone).ok()
    }

    /// A placeholder frame for `len` bytes of `file` at `offset` (`len` is capped at
    /// [`MAX_FRAME`]); the range is queued for [`SendfileIo`].
    pub fn frame(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(MAX_FRAME);
        self.lock().push_back(Job {
            file: Arc::clone(file),
            offset,
            len,
            done: 0,
        });
        Bytes::from_static(PLACEHOLDER.get(..len).unwrap_or(&[]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A panic while holding this lock leaves a plain queue: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The file, position and byte count of the next `sendfile` for a placeholder write of
    /// `buf`, checked against the front of the queue.
    fn next(&self, buf: &[u8]) -> io::Result<(Arc<File>, u64, usize)> {
        let at = placeholder_offset(buf).unwrap_or(usize::MAX);
        let queue = self.lock();
        match queue.front() {
            Some(job) if job.done == at && job.len - job.done == buf.len() => Ok((
                Arc::clone(&job.file),
                job.offset + job.done as u64,
                buf.len(),
            )),
            _ => Err(io::Error::other(
                "placeholder write does not match the queued file range",
            )),
        }
    }

    /// Accounts for `n` bytes sent from the front range.
    fn sent(&self, n: usize) {
        let mut queue = self.lock();
        if let Some(job) = queue.front_mut() {
            job.done += n;
            if job.done >= job.len {
                queue.pop_front();
            }
        }
    }
}

/// Runs `conn` (a plain-TCP connection served over a [`SendfileIo`] sharing `pending`) with
/// zero-copy file bodies enabled.
pub async fn zero_copy<F: Future>(pending: Pending, conn: F) -> F::Output {
    PENDING.scope(pending, conn).await
}

/// Where `buf` starts inside the placeholder, if it is a non-empty slice of it.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let start = buf.as_ptr() as usize;
    let inside = !buf.is_empty() && start >= base && start + buf.len() <= base + MAX_FRAME;
    inside.then(|| start - base)
}

/// A plain TCP stream whose placeholder writes become `sendfile` calls.
#[derive(Debug)]
pub struct SendfileIo {
    stream: TcpStream,
    pending: Pending,
}

impl SendfileIo {
    /// Wraps `stream`; file ranges come from `pending`.
    pub fn new(stream: TcpStream, pending: Pending) -> Self {
        SendfileIo { stream, pending }
    }

    /// Sends the queued range that `buf` (a placeholder) stands for; partial like any write.
    fn poll_sendfile(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let (file, mut offset, count) = self.pending.next(buf)?;
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, &*file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    )))
                }
                Ok(n) => {
                    self.pending.sent(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SendfileIo {
    /// Writes `bufs` (a response head) with `MSG_MORE`: a file range follows at once, so the
    /// kernel holds the head back to send it in one segment with the first file bytes
    /// (nginx's `tcp_nopush`) rather than alone.
    fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let mut control = SendAncillaryBuffer::default();
                rustix::net::sendmsg(&self.stream, bufs, &mut control, SendFlags::MORE)
                    .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if placeholder_offset(buf).is_some() {
            return this.poll_sendfile(cx, buf);
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    /// Writes the leading run of ordinary buffers with one `writev`, or, when a placeholder
    /// leads, sends its range; the caller comes back for the rest.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => bufs.get(first..).unwrap_or(&[]),
            None => return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs),
        };
        let plain = bufs
            .iter()
            .position(|b| placeholder_offset(b).is_some())
            .unwrap_or(bufs.len());
        match (plain, bufs.first()) {
            (0, Some(lead)) => this.poll_sendfile(cx, lead),
            _ if plain < bufs.len() => this.poll_send_more(cx, bufs.get(..plain).unwrap_or(&[])),
            _ => {
                Pin::new(&mut this.stream).poll_write_vectored(cx, bufs.get(..plain).unwrap_or(&[]))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address_only() {
        let pending = Pending::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let frame = pending.frame(&file, 0, 10);
        assert_eq!(placeholder_offset(&frame), Some(0));
        assert_eq!(placeholder_offset(&frame[4..]), Some(4));
        assert_eq!(placeholder_offset(&[0u8; 10]), None);
        assert_eq!(placeholder_offset(&frame[..0]), None);
    }

    #[test]
    fn a_write_must_match_the_front_of_the_queue() {
        let pending = Pending::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let frame = pending.frame(&file, 100, 10);
        assert!(pending.next(&frame[1..]).is_err(), "wrong position");
        assert!(pending.next(&frame[..5]).is_err(), "wrong length");
        let (_, offset, count) = pending.next(&frame).unwrap();
        assert_eq!((offset, count), (100, 10));
        pending.sent(4);
        let (_, offset, count) = pending.next(&frame[4..]).unwrap();
        assert_eq!((offset, count), (104, 6));
        pending.sent(6);
        assert!(pending.next(&frame).is_err(), "queue empty");
    }
}
