//! Page-aligned byte buffers for the log's in-memory tail, and the pool
//! that keeps them between segments.
//!
//! A segment opened with O_DIRECT takes whole pages from page-aligned
//! memory. The writer builds its records in an [`AlignedBuf`], so the
//! pipeline hands the buffer itself to `pwrite` (no bounce copy), and the
//! [`BufPool`] gives emptied buffers back to the next tail, across segment
//! rolls, so a long stream of writes touches the same few megabytes instead
//! of faulting in fresh pages for every chunk.

use parking_lot::Mutex;
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every buffer: the log's page.
pub const ALIGN: usize = crate::format::PAGE;

/// A growable byte buffer whose start is `ALIGN`-aligned: the subset of
/// `Vec<u8>` the log writer uses.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: an AlignedBuf owns its allocation outright, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read the bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer with room for at least `cap` bytes.
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let mut b = AlignedBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        };
        b.grow_to(cap);
        b
    }

    /// A buffer holding a copy of `s`.
    pub fn from_slice(s: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::with_capacity(s.len());
        b.extend_from_slice(s);
        b
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the buffer to `n` bytes (no-op if it is shorter).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    fn layout(cap: usize) -> Layout {
        Layout::from_size_align(cap, ALIGN).expect("buffer layout")
    }

    /// Reallocates to hold at least `want` bytes (rounded up to whole pages).
    fn grow_to(&mut self, want: usize) {
        if want <= self.cap {
            return;
        }
        let cap = want.max(self.cap * 2).max(ALIGN).div_ceil(ALIGN) * ALIGN;
        let layout = Self::layout(cap);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(p) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        if self.cap > 0 {
            // SAFETY: both regions are valid for `len` bytes and distinct;
            // the old one was allocated with `layout(self.cap)`.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), p.as_ptr(), self.len);
                dealloc(self.ptr.as_ptr(), Self::layout(self.cap));
            }
        }
        self.ptr = p;
        self.cap = cap;
    }

    /// Makes room for `extra` more bytes.
    pub fn reserve(&mut self, extra: usize) {
        self.grow_to(self.len + extra);
    }

    /// Appends a copy of `s`.
    pub fn extend_from_slice(&mut self, s: &[u8]) {
        self.reserve(s.len());
        // SAFETY: room was reserved; `s` cannot alias our spare capacity.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.as_ptr().add(self.len), s.len());
        }
        self.len += s.len();
    }

    /// Grows to `n` bytes filled with `v`, or shortens to `n`.
    pub fn resize(&mut self, n: usize, v: u8) {
        if n > self.len {
            self.reserve(n - self.len);
            // SAFETY: room was reserved.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), v, n - self.len) };
        }
        self.len = n;
    }

    /// Removes the first `n` bytes, moving the rest to the front.
    pub fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.copy_within(n.., 0);
        self.len -= n;
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes from `ptr` are initialised (or len is 0 and
        // ptr is dangling but aligned).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated in grow_to with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} of {} bytes)", self.len, self.cap)
    }
}

/// Emptied tail buffers of one log writer, shared by its segments'
/// pipelines: a drained chunk's buffer comes back here and the writer's
/// next tail takes it. Holds at most `max` buffers.
pub struct BufPool {
    free: Mutex<Vec<AlignedBuf>>,
    max: usize,
}

impl BufPool {
    /// A pool that keeps up to `max` buffers.
    pub fn new(max: usize) -> BufPool {
        BufPool {
            free: Mutex::new(Vec::new()),
            max,
        }
    }

    /// An empty buffer of at least `cap` bytes: a kept one if there is one.
    pub fn take(&self, cap: usize) -> AlignedBuf {
        let kept = {
            let mut f = self.free.lock();
            f.iter()
                .position(|b| b.capacity() >= cap)
                .map(|i| f.swap_remove(i))
        };
        kept.unwrap_or_else(|| AlignedBuf::with_capacity(cap))
    }

    /// Keeps `b` for a later `take`, or frees it if enough are kept.
    pub fn put(&self, mut b: AlignedBuf) {
        b.clear();
        let mut f = self.free.lock();
        if f.len() < self.max {
            f.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_behaves_like_a_vec() {
        let mut b = AlignedBuf::with_capacity(10);
        let mut v = Vec::new();
        for i in 0..3000u32 {
            let s = i.to_le_bytes();
            b.extend_from_slice(&s[..(i % 4) as usize + 1]);
            v.extend_from_slice(&s[..(i % 4) as usize + 1]);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        }
        assert_eq!(&b[..], &v[..]);
        b.resize(b.len() + 5000, 7);
        v.resize(v.len() + 5000, 7);
        assert_eq!(&b[..], &v[..]);
        b.drain_front(1234);
        v.drain(..1234);
        assert_eq!(&b[..], &v[..]);
        b.truncate(100);
        v.truncate(100);
        assert_eq!(&b[..], &v[..]);
        let c = AlignedBuf::from_slice(&v);
        assert_eq!(&c[..], &v[..]);
        assert_eq!(c.as_ptr() as usize % ALIGN, 0);
        let e = AlignedBuf::with_capacity(0);
        assert!(e.is_empty() && e.iter().next().is_none());
    }

    #[test]
    fn pool_keeps_at_most_its_max() {
        let p = BufPool::new(2);
        for _ in 0..3 {
            p.put(AlignedBuf::with_capacity(8192));
        }
        assert_eq!(p.free.lock().len(), 2);
        let b = p.take(8192);
        assert!(b.capacity() >= 8192 && b.is_empty());
        assert_eq!(p.free.lock().len(), 1);
        let big = p.take(1 << 20);
        assert!(big.capacity() >= 1 << 20);
        assert_eq!(p.free.lock().len(), 1);
    }
}
