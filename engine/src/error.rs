//! Errors callers can act on: a small kind to match on, context to read.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something malformed (URI, size, name, unaligned I/O).
    InvalidArgument,
    /// The volume, snapshot or file does not exist.
    NotFound,
    /// The volume, snapshot or file already exists.
    Exists,
    /// Another process holds the volume open read-write.
    Locked,
    /// Something still depends on the target (a snapshot with clones).
    InUse,
    /// On-disk data failed verification.
    Corrupt,
    /// The backend is out of space.
    NoSpace,
    /// The operation needs a read-write volume.
    ReadOnly,
    /// The operation or backend is not supported (yet).
    Unsupported,
    /// Any other backend I/O failure.
    Backend,
    /// A `try_` call would have had to wait for I/O or a busy lock; the
    /// caller does the blocking call instead (`Volume::try_read_vectored`).
    WouldBlock,
}

impl ErrorKind {
    /// The negative errno this kind maps to at the C ABI.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => libc::EINVAL,
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Locked => libc::EAGAIN,
            ErrorKind::InUse => libc::EBUSY,
            ErrorKind::Corrupt => libc::EIO,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::Unsupported => libc::ENOTSUP,
            ErrorKind::Backend => libc::EIO,
            ErrorKind::WouldBlock => libc::EAGAIN,
        }
    }
}

/// An engine error: a kind plus a one-line, human-readable message that names
/// the thing and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<std::io::Error>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Wraps an I/O error, classifying ENOSPC, ENOENT and EEXIST.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::Exists,
            std::io::ErrorKind::StorageFull => ErrorKind::NoSpace,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Backend,
            _ if err.raw_os_error() == Some(libc::ENOSPC) => ErrorKind::NoSpace,
            _ => ErrorKind::Backend,
        };
        Error {
            kind,
            message: context.into(),
            source: Some(err),
        }
    }

    /// The kind to match on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Prefixes the message with more context ("opening local:///x: …").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

/// Shorthand constructors.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}
pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, msg)
}
pub(crate) fn not_found(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::NotFound, msg)
}

thread_local! {
    /// Set while this thread runs a `try_` call that must not wait.
    static NOWAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a call that must not wait for I/O or a
/// contended lock (`with_nowait`): the read path then fails with
/// `WouldBlock` wherever it would wait.
pub(crate) fn nowait() -> bool {
    NOWAIT.get()
}

/// Runs `f` with `nowait()` set on this thread.
pub(crate) fn with_nowait<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NOWAIT.set(self.0);
        }
    }
    let _reset = Reset(NOWAIT.replace(true));
    f()
}

/// The error of a `nowait()` call that would have to wait for `what`.
pub(crate) fn would_block(what: &str) -> Error {
    Error::new(ErrorKind::WouldBlock, format!("would wait for {what}"))
}

/// Engine result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
