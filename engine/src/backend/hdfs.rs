//! The HDFS backend, through the pure-Rust `hdfs-native` client: no JVM, no
//! libhdfs, so QEMU keeps its default coroutines (docs/hdfs.md).
//!
//! `hdfs-native` is async (tokio). The engine is not: every call here
//! blocks on one small runtime shared by the process, from whatever thread
//! calls (QEMU's thread pool, the CLI's main thread). A call made from
//! inside some other tokio runtime runs on a helper thread instead, since
//! blocking a runtime's own thread on another runtime panics.
//!
//! What HDFS cannot do shapes the engine's use of it: a file's bytes are
//! durable and visible to readers once its writer closes it, so
//! `sync_is_durable` and `reads_see_unclosed_appends` are false and a flush
//! seals the active segment. Every NameNode call runs under a deadline
//! (`HLFS_HDFS_TIMEOUT` seconds, default 20) with retries while the
//! NameNode refuses connections; then the error names the address.

use super::{AppendFile, Backend, ReadFile, Usage};
use crate::error::{Error, ErrorKind, Result};
use hdfs_native::file::{FileReader, FileWriter};
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default deadline for one NameNode call, retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Data transfers (append, close, read) may take this many times the deadline.
const IO_FACTOR: u32 = 6;

/// The deadline for NameNode calls: `HLFS_HDFS_TIMEOUT` (seconds, may be
/// fractional), else 20 s.
pub fn timeout() -> Duration {
    std::env::var("HLFS_HDFS_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hlfs-hdfs")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("starting the HDFS client runtime: {e}"),
        )
    })
}

/// Runs `fut` to completion on the backend's runtime.
fn block_on<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking a runtime thread on another runtime panics: wait on a helper thread.
        return std::thread::scope(|s| s.spawn(|| rt.block_on(fut)).join())
            .map_err(|_| Error::new(ErrorKind::Backend, "HDFS client thread panicked"));
    }
    Ok(rt.block_on(fut))
}

/// `fs.defaultFS` from `$HADOOP_CONF_DIR/core-site.xml`, else
/// `$HADOOP_HOME/etc/hadoop/core-site.xml`: where `hdfs:///path` goes.
pub fn default_fs() -> Option<String> {
    let dir = match std::env::var_os("HADOOP_CONF_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HADOOP_HOME")?).join("etc/hadoop"),
    };
    let text = std::fs::read_to_string(dir.join("core-site.xml")).ok()?;
    property(&text, "fs.defaultFS")
}

/// The value of property `name` in a Hadoop `*-site.xml` text.
fn property(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(i) = rest.find("<property>") {
        let body = &rest[i..];
        let end = body.find("</property>").unwrap_or(body.len());
        let prop = &body[..end];
        let field = |tag: &str| -> Option<&str> {
            let open = format!("<{tag}>");
            let a = prop.find(&open)? + open.len();
            let b = prop[a..].find(&format!("</{tag}>"))? + a;
            Some(prop[a..b].trim())
        };
        if field("name") == Some(name) {
            return field("value").map(str::to_string);
        }
        rest = &body[end..];
    }
    None
}

/// One HDFS filesystem (NameNode, name service, or the default one).
pub struct HdfsBackend {
    client: Client,
    /// What messages call the NameNode: `host:port`, the name service, or
    /// the default filesystem's URL.
    addr: String,
    timeout: Duration,
}

impl std::fmt::Debug for HdfsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HdfsBackend({})", self.addr)
    }
}

fn clients() -> &'static Mutex<HashMap<String, Arc<HdfsBackend>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<HdfsBackend>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

impl HdfsBackend {
    /// The backend for `hdfs://authority/…` (`None`: `hdfs:///…`, the
    /// default filesystem). One client per filesystem and process. Nothing
    /// is contacted yet; the first call is.
    pub fn connect(authority: Option<&str>) -> Result<Arc<HdfsBackend>> {
        let key = authority.unwrap_or("").to_string();
        if let Some(b) = clients().lock().get(&key) {
            return Ok(b.clone());
        }
        let url = match authority {
            Some(a) => format!("hdfs://{a}"),
            None => default_fs().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "hdfs:///path uses the default filesystem, but no fs.defaultFS was found in \
                     $HADOOP_CONF_DIR/core-site.xml or $HADOOP_HOME/etc/hadoop/core-site.xml; \
                     set HADOOP_CONF_DIR, or write hdfs://namenode:port/path",
                )
            })?,
        };
        let addr = url
            .strip_prefix("hdfs://")
            .unwrap_or(&url)
            .trim_end_matches('/')
            .to_string();
        let rt = runtime()?;
        let mut builder = ClientBuilder::new()
            .with_url(url.clone())
            .with_io_runtime(rt.handle().clone());
        if addr.contains(':') {
            // One NameNode: fail each attempt at once and retry here, under
            // the deadline, so the error can say what went wrong. (A name
            // service keeps the client's own failover between its NameNodes.)
            builder = builder.with_config([("dfs.client.failover.max.attempts", "0")]);
        }
        let client = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("HDFS filesystem {url}: {e}; check the URI and the Hadoop configuration (HADOOP_CONF_DIR)"),
            )
        })?;
        let b = Arc::new(HdfsBackend {
            client,
            addr,
            timeout: timeout(),
        });
        clients().lock().insert(key, b.clone());
        Ok(b)
    }

    /// The same filesystem and client, with another deadline for NameNode
    /// calls (a volume opened with `OpenOptions::hdfs_timeout`).
    pub fn with_timeout(&self, timeout: Duration) -> Arc<HdfsBackend> {
        Arc::new(HdfsBackend {
            client: self.client.clone(),
            addr: self.addr.clone(),
            timeout,
        })
    }

    /// The NameNode address as messages name it.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Runs one NameNode call `f` under the deadline. Connection failures
    /// are retried with backoff (only a refused connection for calls that
    /// change something: the request cannot have been received).
    fn call<T, F, Fut>(&self, what: &str, path: &str, mutating: bool, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = hdfs_native::Result<T>> + Send,
        T: Send,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut backoff = Duration::from_millis(100);
        let mut last: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let fut = f(self.client.clone());
            // The timer must be made inside the runtime.
            let r = block_on(async move { tokio::time::timeout(left, fut).await })?;
            match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if retriable(&e, mutating) => {
                    last = Some(e.to_string());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.unreachable(start, last));
                    }
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ok(Err(e)) => return Err(self.map_err(what, path, e)),
                Err(_) => return Err(self.unreachable(start, last)),
            }
        }
    }

    /// Runs one data transfer under the longer I/O deadline.
    fn io<T, Fut>(&self, what: &str, path: &str, fut: Fut) -> Result<T>
    where
        Fut: Future<Output = hdfs_native::Result<T>> + Send,
        T: Send,
    {
        self.io_within(self.timeout * IO_FACTOR, what, path, fut)
    }

    /// `io` under the deadline `limit`.
    fn io_within<T, Fut>(&self, limit: Duration, what: &str, path: &str, fut: Fut) -> Result<T>
    where
        Fut: Future<Output = hdfs_native::Result<T>> + Send,
        T: Send,
    {
        let factor = limit.as_secs_f64() / self.timeout.as_secs_f64().max(1e-9);
        match block_on(async move { tokio::time::timeout(limit, fut).await })? {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(what, path, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "{what} {path} on HDFS {}: no progress within {:.0} s (HLFS_HDFS_TIMEOUT × {factor:.0}); \
                     are the DataNodes reachable?",
                    self.addr,
                    limit.as_secs_f64()
                ),
            )),
        }
    }

    fn unreachable(&self, start: Instant, last: Option<String>) -> Error {
        Error::new(
            ErrorKind::Backend,
            format!(
                "HDFS NameNode {} is unreachable: no answer within {:.1} s{}; check the address and that \
                 the NameNode runs (HLFS_HDFS_TIMEOUT or the volume's hdfs-timeout option sets the deadline)",
                self.addr,
                start.elapsed().as_secs_f64(),
                last.map(|l| format!(" (last error: {l})")).unwrap_or_default()
            ),
        )
    }

    /// An engine error for a failed call: the kind from the exception, the
    /// message naming the operation, the path and the NameNode.
    fn map_err(&self, what: &str, path: &str, e: HdfsError) -> Error {
        let at = format!("{what} {path} on HDFS {}", self.addr);
        let (kind, why) = classify(&e);
        Error::new(kind, format!("{at}: {why}"))
    }
}

/// Errors worth another attempt: the NameNode could not be reached (for a
/// call that changes something, only a refused connection, which proves the
/// request was not received), or it asked for a retry (safe mode, standby).
fn retriable(e: &HdfsError, mutating: bool) -> bool {
    use std::io::ErrorKind as K;
    match e {
        HdfsError::IOError(io) if mutating => io.kind() == K::ConnectionRefused,
        HdfsError::IOError(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::TimedOut
                | K::UnexpectedEof
                | K::BrokenPipe
        ),
        HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _) => {
            class.ends_with("RetriableException") || class.ends_with("StandbyException")
        }
        _ => false,
    }
}

/// The engine's error kind and a readable reason for an `hdfs-native` error.
fn classify(e: &HdfsError) -> (ErrorKind, String) {
    match e {
        HdfsError::FileNotFound(_) => (ErrorKind::NotFound, "no such file or directory".into()),
        HdfsError::AlreadyExists(_) => (ErrorKind::Exists, "already exists".into()),
        HdfsError::IsADirectoryError(_) => (ErrorKind::Exists, "is a directory".into()),
        HdfsError::RPCError(class, msg) | HdfsError::FatalRPCError(class, msg) => {
            let short = class.rsplit('.').next().unwrap_or(class);
            let first = msg.lines().next().unwrap_or("").trim();
            match short {
                "FileNotFoundException" => (ErrorKind::NotFound, format!("no such file or directory ({first})")),
                "FileAlreadyExistsException" | "AlreadyBeingCreatedException" => {
                    (ErrorKind::Exists, format!("already exists ({first})"))
                }
                "AccessControlException" => (
                    ErrorKind::Backend,
                    format!("permission denied ({first}); check the directory's owner and mode, or HADOOP_USER_NAME"),
                ),
                "SafeModeException" => (
                    ErrorKind::Backend,
                    format!("the NameNode is in safe mode ({first}); wait until it leaves safe mode"),
                ),
                "DSQuotaExceededException" | "NSQuotaExceededException" => {
                    (ErrorKind::NoSpace, format!("quota exceeded ({first})"))
                }
                "ParentNotDirectoryException" => (
                    ErrorKind::InvalidArgument,
                    format!("a parent of the path is a file, not a directory ({first})"),
                ),
                "PathIsNotEmptyDirectoryException" => {
                    (ErrorKind::Backend, format!("directory is not empty ({first})"))
                }
                _ => (ErrorKind::Backend, format!("{short}: {first}")),
            }
        }
        HdfsError::DataTransferError(m) => (
            ErrorKind::Backend,
            format!("DataNode transfer failed ({m}); what was flushed before is safe, close and reopen the volume"),
        ),
        HdfsError::ChecksumError => (
            ErrorKind::Corrupt,
            "DataNode returned data that fails its HDFS checksum".into(),
        ),
        HdfsError::BlocksNotFound(m) => (
            ErrorKind::Backend,
            format!("no DataNode holds the blocks ({m}); are DataNodes down?"),
        ),
        HdfsError::IOError(io) => (ErrorKind::Backend, format!("network error: {io}")),
        other => (ErrorKind::Backend, other.to_string()),
    }
}

struct HdfsAppend {
    backend: Arc<HdfsBackend>,
    path: String,
    writer: FileWriter,
}

impl AppendFile for HdfsAppend {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        let buf = bytes::Bytes::copy_from_slice(data);
        let w = &mut self.writer;
        self.backend.io("appending to", &self.path, async move {
            w.write_bytes(buf).await.map(drop)
        })
    }

    fn sync(&mut self) -> Result<()> {
        // hsync: every DataNode of the block's pipeline has the bytes on
        // disk, and the NameNode records the length, so new readers (and
        // lease recovery after a crash) see them. Erasure-coded files
        // refuse it.
        // Under the NameNode deadline, not the longer one of bulk
        // transfers: an hsync carries at most a packet, and when a DataNode
        // of the pipeline went away hdfs-native 0.14.8 can wait for its
        // acknowledgement forever. The engine then writes the unsynced
        // records into a new segment with a fresh pipeline (`log`).
        let w = &mut self.writer;
        let limit = self.backend.timeout;
        let r = self
            .backend
            .io_within(limit, "syncing", &self.path, async move { w.hsync().await });
        match r {
            Err(e) if e.to_string().contains("erasure-coded") => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: HDFS cannot hsync an erasure-coded file, and HLFS needs that for every flush; keep volumes in a replicated directory (`hdfs ec -unsetPolicy -path DIR`, then copy the volume there)",
                    self.path
                ),
            )),
            r => r,
        }
    }

    fn truncate(&mut self, _len: u64) -> Result<()> {
        // Never called: `append_is_repairable` is false.
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{}: an HDFS file cannot be truncated while it is written",
                self.path
            ),
        ))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let w = &mut self.writer;
        self.backend
            .io("closing", &self.path, async move { w.close().await })
    }
}

struct HdfsRead {
    backend: Arc<HdfsBackend>,
    path: String,
    reader: RwLock<Arc<FileReader>>,
}

impl HdfsRead {
    fn open(backend: &Arc<HdfsBackend>, path: &str) -> Result<Arc<FileReader>> {
        let p = path.to_string();
        backend
            .call("opening", path, false, move |c| {
                let p = p.clone();
                async move { c.read(&p).await }
            })
            .map(Arc::new)
    }
}

impl ReadFile for HdfsRead {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let mut r = self.reader.read().clone();
        if end > r.file_length() as u64 {
            // The file may have grown (closed by its writer) since we opened it.
            r = HdfsRead::open(&self.backend, &self.path)?;
            *self.reader.write() = r.clone();
            if end > r.file_length() as u64 {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: short read of {} bytes at offset {offset} (HDFS {} shows {} bytes)",
                        self.path,
                        buf.len(),
                        self.backend.addr,
                        r.file_length()
                    ),
                ));
            }
        }
        let what = format!("reading at offset {offset}");
        self.backend.io(&what, &self.path, async move {
            r.read_range_buf(buf, offset as usize).await
        })
    }

    fn len(&self) -> Result<u64> {
        Ok(self.reader.read().file_length() as u64)
    }
}

fn names(statuses: Vec<hdfs_native::client::FileStatus>) -> Vec<String> {
    let mut out: Vec<String> = statuses
        .into_iter()
        .map(|s| s.path.rsplit('/').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect();
    out.sort();
    out
}

impl Backend for Arc<HdfsBackend> {
    fn create(&self, path: &str) -> Result<Box<dyn AppendFile>> {
        let p = path.to_string();
        let writer = self.call("creating", path, true, move |c| {
            let p = p.clone();
            async move {
                let opts = WriteOptions::default().overwrite(false).create_parent(true);
                c.create(&p, opts).await
            }
        })?;
        Ok(Box::new(HdfsAppend {
            backend: self.clone(),
            path: path.to_string(),
            writer,
        }))
    }

    fn open_read(&self, path: &str) -> Result<Arc<dyn ReadFile>> {
        let r = HdfsRead::open(self, path)?;
        Ok(Arc::new(HdfsRead {
            backend: self.clone(),
            path: path.to_string(),
            reader: RwLock::new(r),
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let d = dir.to_string();
        self.call("listing", dir, false, move |c| {
            let d = d.clone();
            async move { c.list_status(&d, false).await }
        })
        .map(names)
    }

    fn usage(&self, dir: &str) -> Result<Usage> {
        let d = dir.to_string();
        let all = self.call("measuring", dir, false, move |c| {
            let d = d.clone();
            async move { c.list_status(&d, true).await }
        })?;
        let base = format!("{}/", dir.trim_end_matches('/'));
        Ok(super::fold_usage(all.iter().map(|s| {
            // Paths come back absolute (or relative to the directory).
            let rel = s.path.strip_prefix(&base).unwrap_or(&s.path);
            let t = std::time::UNIX_EPOCH + Duration::from_millis(s.modification_time);
            (rel, s.length as u64, s.isdir, t)
        })))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (from.to_string(), to.to_string());
        self.call("renaming", &format!("{from} to {to}"), true, move |c| {
            let (f, t) = (f.clone(), t.clone());
            async move { c.rename(&f, &t, false).await }
        })
    }

    fn delete(&self, path: &str) -> Result<()> {
        let p = path.to_string();
        let deleted = self.call("deleting", path, true, move |c| {
            let p = p.clone();
            async move { c.delete(&p, false).await }
        })?;
        if deleted {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("deleting {path} on HDFS {}: no such file", self.addr),
            ))
        }
    }

    fn remove_dir(&self, dir: &str) -> Result<()> {
        let d = dir.to_string();
        match self.call("removing directory", dir, true, move |c| {
            let d = d.clone();
            async move { c.delete(&d, false).await }
        }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, dir: &str) -> Result<()> {
        let d = dir.to_string();
        self.call("creating directory", dir, true, move |c| {
            let d = d.clone();
            async move { c.mkdirs(&d, 0o755, true).await }
        })
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let p = path.to_string();
        match self.call("checking", path, false, move |c| {
            let p = p.clone();
            async move { c.get_file_info(&p).await }
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn recover_lease(&self, path: &str) -> Result<bool> {
        let p = path.to_string();
        let closed = self.call("recovering the lease of", path, true, move |c| {
            let p = p.clone();
            async move { c.recover_lease(&p).await }
        })?;
        if !closed {
            tracing::info!("{path} on HDFS {}: lease recovery started", self.addr);
        }
        Ok(closed)
    }

    fn has_leases(&self) -> bool {
        true
    }

    /// Three NameNode deadlines (`HLFS_HDFS_TIMEOUT`, 60 s by default):
    /// long enough for the NameNode to stop offering a dead DataNode, short
    /// enough that a guest's request fails, rather than hangs, while the
    /// NameNode is down.
    fn retry_window(&self) -> Option<Duration> {
        Some(self.timeout * 3)
    }

    fn sync_is_durable(&self) -> bool {
        true
    }

    fn reads_see_unclosed_appends(&self) -> bool {
        false
    }

    fn append_is_repairable(&self) -> bool {
        false
    }

    fn local_index_dir(&self, _volume_dir: &str) -> Option<PathBuf> {
        // The index lives in the per-user cache (`OpenOptions::index_root`).
        None
    }

    fn available_bytes(&self, _dir: &str) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_default_fs_from_site_xml() {
        let xml = "<?xml version=\"1.0\"?>\n<configuration>\n  <property>\n    <name>hadoop.tmp.dir</name>\n    <value>/tmp</value>\n  </property>\n  <property>\n    <name>fs.defaultFS</name>\n    <value> hdfs://nn.example:8020 </value>\n  </property>\n</configuration>\n";
        assert_eq!(
            property(xml, "fs.defaultFS").as_deref(),
            Some("hdfs://nn.example:8020")
        );
        assert_eq!(property(xml, "fs.other"), None);
    }

    #[test]
    fn classifies_namenode_exceptions() {
        let e = HdfsError::RPCError(
            "org.apache.hadoop.security.AccessControlException".into(),
            "Permission denied: user=x, access=WRITE, inode=\"/v\"\n\tat org.apache...".into(),
        );
        let (k, m) = classify(&e);
        assert_eq!(k, ErrorKind::Backend);
        assert!(
            m.contains("permission denied") && !m.contains("\tat"),
            "{m}"
        );
        let e = HdfsError::RPCError(
            "java.io.FileNotFoundException".into(),
            "File does not exist: /x".into(),
        );
        assert_eq!(classify(&e).0, ErrorKind::NotFound);
        let e = HdfsError::AlreadyExists("/x".into());
        assert_eq!(classify(&e).0, ErrorKind::Exists);
        let refused =
            || HdfsError::IOError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(retriable(&refused(), true));
        let reset = HdfsError::IOError(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(
            !retriable(&reset, true),
            "a create whose answer was lost may have happened"
        );
        assert!(retriable(&reset, false));
    }
}
