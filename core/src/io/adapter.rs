//! Owned-buffer reads and writes over tokio's `AsyncRead`/`AsyncWrite`: the whole data
//! path of a readiness backend. Shared by the tokio backend and the simulation's turmoil
//! backend (turmoil streams are `AsyncRead`/`AsyncWrite` too).

use super::{BufResult, IoBuf};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads into the spare capacity of `buf` without ever growing it.
pub async fn read_into<R: AsyncRead + Unpin>(r: &mut R, mut buf: IoBuf) -> BufResult<usize> {
    if buf.spare_capacity() == 0 {
        return (
            Err(io::Error::new(io::ErrorKind::InvalidInput, "read into a full buffer")),
            buf,
        );
    }
    let res = r.read_buf(buf.vec_mut()).await;
    (res, buf)
}

/// Writes some unconsumed bytes of `buf` and consumes what was written.
pub async fn write_from<W: AsyncWrite + Unpin>(w: &mut W, mut buf: IoBuf) -> BufResult<usize> {
    let res = w.write(buf.bytes()).await;
    if let Ok(n) = res {
        buf.consume(n);
    }
    (res, buf)
}
