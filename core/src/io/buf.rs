//! Owned I/O buffers.

/// A byte buffer that is handed to the I/O backend and comes back with the result.
///
/// Bytes `[start..len)` of the inner vector are filled and not yet consumed; reads append
/// after them into the spare capacity, writes consume from the front. The capacity is
/// fixed at creation: reads never grow the buffer, so memory per connection is bounded by
/// the configured buffer size.
#[derive(Debug, Default)]
pub struct IoBuf {
    data: Vec<u8>,
    start: usize,
}

impl IoBuf {
    /// An empty buffer able to hold `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> IoBuf {
        IoBuf {
            data: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// A buffer holding `bytes`, ready to be written.
    pub fn from_vec(bytes: Vec<u8>) -> IoBuf {
        IoBuf { data: bytes, start: 0 }
    }

    /// The filled, unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Number of filled, unconsumed bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// True when nothing is left to consume.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total capacity.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Room left for a read, after compacting consumed bytes away if that helps.
    pub fn spare_capacity(&mut self) -> usize {
        if self.start > 0 && self.data.len() == self.data.capacity() {
            self.compact();
        }
        self.data.capacity() - self.data.len()
    }

    /// Marks `n` bytes at the front as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.clear();
        }
    }

    /// The inner vector, unconsumed bytes and all (consumed ones are dropped).
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.start > 0 {
            self.compact();
        }
        self.data
    }

    /// Drops every byte, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Appends `bytes` if they fit in the spare capacity; returns how many were copied.
    pub fn extend_within_capacity(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.spare_capacity());
        self.data.extend_from_slice(&bytes[..n]);
        n
    }

    /// The inner vector, for backends: reads append into its spare capacity
    /// (`Vec::spare_capacity_mut` then `set_len`, or `BufMut`), never past capacity.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.data.len() == self.data.capacity() {
            self.compact();
        }
        &mut self.data
    }

    /// For completion backends: the spare capacity as a raw pointer and its length, after
    /// compacting consumed bytes away if that helps. The pointer is into the heap
    /// allocation, which stays where it is when the `IoBuf` itself is moved (into an
    /// operation table, say); it stays valid until the buffer is next used.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn spare_raw(&mut self) -> (*mut u8, usize) {
        let spare = self.vec_mut().spare_capacity_mut();
        (spare.as_mut_ptr().cast::<u8>(), spare.len())
    }

    /// Counts `n` more bytes as filled, after a completion backend wrote them into the
    /// spare capacity.
    ///
    /// # Safety
    ///
    /// The first `n` bytes of the spare capacity (as [`IoBuf::spare_raw`] reported it,
    /// with the buffer untouched since) must have been written, and `n` must not exceed
    /// the spare capacity.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) unsafe fn assume_filled(&mut self, n: usize) {
        debug_assert!(n <= self.data.capacity() - self.data.len());
        // SAFETY: the caller guarantees that these bytes were written and fit.
        unsafe { self.data.set_len(self.data.len() + n) }
    }

    /// Moves unconsumed bytes to the front.
    fn compact(&mut self) {
        self.data.drain(..self.start);
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_then_compact_keeps_bytes_in_order() {
        let mut b = IoBuf::with_capacity(4);
        assert_eq!(b.extend_within_capacity(b"abcdef"), 4);
        assert_eq!(b.spare_capacity(), 0);
        b.consume(3);
        assert_eq!(b.bytes(), b"d");
        assert_eq!(b.spare_capacity(), 3);
        assert_eq!(b.extend_within_capacity(b"xyz"), 3);
        assert_eq!(b.bytes(), b"dxyz");
        assert_eq!(b.capacity(), 4);
        b.consume(10);
        assert!(b.is_empty());
        assert_eq!(b.spare_capacity(), 4);
    }
}
