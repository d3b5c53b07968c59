//! Response bodies: nothing, a small in-memory buffer, or a file range streamed in chunks.
//! On a plain-TCP connection a chunk already in the page cache is not read at all: it is sent
//! with `sendfile` ([`crate::sendfile`]). Otherwise (TLS), a chunk in the page cache is read inline with `preadv2(RWF_NOWAIT)` (never blocks:
//! the kernel answers `EAGAIN` rather than wait for the disk); anything else is read on the
//! blocking pool. A file body holds at most one chunk in memory; hyper polls for the next only
//! once its write buffer has drained, so memory per connection stays bounded.
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::sendfile::{self, Pending};

/// Bytes read from a file per chunk.
pub const FILE_CHUNK: usize = 256 * 1024;

/// The body of every response this server sends.
#[derive(Debug)]
pub enum ResponseBody {
    /// No body (HEAD, 304, 416…).
    Empty,
    /// A small buffer, sent once.
    Bytes(Option<Bytes>),
    /// A byte range of a file.
    File(FileBody),
}

impl ResponseBody {
    /// A body from anything convertible into bytes.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        ResponseBody::Bytes(Some(b.into()))
    }
}

/// `len` bytes of `file` from `offset`, read chunk by chunk with positioned reads.
#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    /// The connection's `sendfile` queue, on plain TCP.
    zero_copy: Option<Pending>,
}

impl FileBody {
    /// Streams `len` bytes of `file` starting at `offset`; zero-copy when the current task
    /// serves a plain-TCP connection ([`Pending::current`]).
    pub fn new(file: File, offset: u64, len: u64) -> Self {
        FileBody {
            file: Arc::new(file),
            offset,
            remaining: len,
            pending: None,
            zero_copy: Pending::current(),
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(handle) = self.pending.as_mut() {
                let joined = ready!(Pin::new(handle).poll(cx));
                self.pending = None;
                let chunk = match joined {
                    Ok(read) => read,
                    Err(e) => Err(io::Error::other(e)),
                };
                return Poll::Ready(Some(chunk.and_then(|b| self.advance(b))));
            }
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            if let Some(frame) = self.zero_copy_frame() {
                return Poll::Ready(Some(self.advance(frame)));
            }
            let want = usize::try_from(self.remaining).map_or(FILE_CHUNK, |r| r.min(FILE_CHUNK));
            if let Some(cached) = read_cached(&self.file, self.offset, want) {
                return Poll::Ready(Some(cached.and_then(|b| self.advance(b))));
            }
            let (file, offset) = (Arc::clone(&self.file), self.offset);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                read_chunk(&file, offset, want)
            }));
        }
    }

    /// A placeholder frame for the next range when it can go out with `sendfile`: plain TCP
    /// and both ends of the range in the page cache (so `sendfile` on the async worker does not
    /// wait for the disk; an uncached range is read on the blocking pool instead, which also
    /// brings it into the cache).
    fn zero_copy_frame(&self) -> Option<Bytes> {
        let queue = self.zero_copy.as_ref()?;
        let want = usize::try_from(self.remaining)
            .map_or(sendfile::MAX_FRAME, |r| r.min(sendfile::MAX_FRAME));
        let last = self.offset + want as u64 - 1;
        (is_cached(&self.file, self.offset) && is_cached(&self.file, last))
            .then(|| queue.frame(&self.file, self.offset, want))
    }

    /// Accounts for a chunk read; a file that shrank under us is an error (the length was
    /// already promised in `Content-Length`).
    fn advance(&mut self, chunk: Bytes) -> io::Result<Bytes> {
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being served",
            ));
        }
        let n = chunk.len() as u64;
        self.offset += n;
        self.remaining = self.remaining.saturating_sub(n);
        Ok(chunk)
    }
}

/// Reads what of `want` bytes at `offset` is in the page cache, without blocking; `None` when
/// nothing is cached (or `RWF_NOWAIT` is unsupported): read on the blocking pool instead.
fn read_cached(file: &File, offset: u64, want: usize) -> Option<io::Result<Bytes>> {
    let mut buf = vec![0u8; want];
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(file, &mut [io::IoSliceMut::new(&mut buf)], offset, flags) {
        Ok(n) => {
            buf.truncate(n);
            Some(Ok(Bytes::from(buf)))
        }
        Err(rustix::io::Errno::INTR) => None,
        Err(rustix::io::Errno::AGAIN)
        | Err(rustix::io::Errno::OPNOTSUPP)
        | Err(rustix::io::Errno::NOSYS) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// Whether the byte at `offset` is in the page cache (a one-byte `RWF_NOWAIT` read).
fn is_cached(file: &File, offset: u64) -> bool {
    let mut byte = [0u8; 1];
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    matches!(
        rustix::io::preadv2(file, &mut [io::IoSliceMut::new(&mut byte)], offset, flags),
        Ok(1)
    )
}

/// Reads up to `want` bytes at `offset`; fewer only at end of file.
fn read_chunk(file: &File, offset: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        let Some(dest) = buf.get_mut(filled..) else {
            break;
        };
        match file.read_at(dest, offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Empty => Poll::Ready(None),
            ResponseBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::File(f) => f.poll_chunk(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Bytes(b) => b.is_none(),
            ResponseBody::File(f) => f.remaining == 0 && f.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Bytes(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}
