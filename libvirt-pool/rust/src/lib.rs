//! HLFS storage pools and volumes of our patched libvirt (11.3.0 +
//! `libvirt-pool/patches`), used through libvirt's Rust bindings, the
//! [`virt`] crate.
//!
//! The daemon does the work (its `hlfs` pool backend runs the `hlfs` CLI);
//! this crate only builds the XML libvirt expects and wraps the calls:
//!
//! * [`pool_xml`] / [`volume_xml`]: pool and volume descriptions, with the
//!   names and the pool URI checked by the same rules as the backend
//!   (so a bad name fails here, with a message, before any call);
//! * [`HlfsPool`]: define/build/start a pool, create, clone, look up volumes,
//!   stream data into ([`HlfsPool::upload`]) and out of
//!   ([`HlfsPool::download`]) a volume.
//!
//! ```no_run
//! use hlfs_libvirt::{HlfsPool, virt::connect::Connect};
//! let conn = Connect::open(Some("qemu:///system"))?;
//! let pool = HlfsPool::define(&conn, "vms", "local:///var/lib/hlfs")?;
//! pool.build()?;
//! pool.start()?;
//! let vol = pool.create_volume("vm1", 8 << 30)?;
//! pool.upload(&vol, &mut std::fs::File::open("disk.raw")?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};

pub use virt;
use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// `virConnectListAllStoragePools` flag selecting hlfs pools (added by
/// libvirt-pool/patches/0001; virt-sys's pre-generated bindings predate it).
pub const VIR_CONNECT_LIST_STORAGE_POOLS_HLFS: u32 = 1 << 20;

/// The longest volume name the backend accepts.
pub const MAX_NAME_LEN: usize = 200;

/// Characters the backend refuses anywhere in a pool URI: the snapshot
/// separator `%`, quoting, shell metacharacters and blanks.
const FORBIDDEN_URI_CHARS: &str = "%`$;&|<>()\\\"'*?[]{}!#~^ \t";

/// Chunk size of the upload/download streams.
const STREAM_CHUNK: usize = 256 * 1024;

/// What can go wrong; `Invalid*` are found before libvirt is called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A volume or pool name outside the backend's alphabet.
    #[error(
        "invalid HLFS {what} name '{name}': {reason}; use letters, digits, '.', '_', '+' \
         and '-', not starting with '.' or '-', at most 200 characters"
    )]
    InvalidName {
        /// "volume" or "pool".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A pool URI the backend would refuse.
    #[error(
        "invalid HLFS pool URI '{uri}': {reason}; use scheme://[authority]/dir, \
         e.g. local:///var/lib/hlfs"
    )]
    InvalidPoolUri {
        /// The URI as given.
        uri: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A volume of size 0.
    #[error("HLFS volume '{0}' needs a capacity > 0")]
    ZeroCapacity(String),
    /// A libvirt call failed; `op` says which, on what.
    #[error("{op}: {source}")]
    Libvirt {
        /// The operation, e.g. "create volume 'vm1'".
        op: String,
        /// libvirt's error (message, code, domain).
        #[source]
        source: virt::error::Error,
    },
    /// Reading the upload's source or writing the download's sink failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation.
        op: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// libvirt's error, if a libvirt call failed.
    pub fn libvirt(&self) -> Option<&virt::error::Error> {
        match self {
            Error::Libvirt { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

trait Context<T> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, virt::error::Error> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Libvirt { op: op(), source })
    }
}

/// Checks a volume name as the backend does: `[A-Za-z0-9._+-]{1,200}`,
/// not starting with `.` or `-` (so no `/`, `..`, `%`, blanks, shell
/// metacharacters; no leading `-` the CLI could read as an option).
pub fn check_volume_name(name: &str) -> Result<()> {
    check_name("volume", name)
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 200 characters")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("it starts with '.' or '-'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    {
        Some("it contains a character other than letters, digits, '.', '_', '+' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a pool URI as the backend does and returns its canonical form
/// (without an `hlfs:` prefix and trailing slashes): `scheme://[authority]/dir`
/// with a lower-case scheme, no `.`/`..` components, no forbidden, control
/// or non-ASCII characters.
pub fn check_pool_uri(uri: &str) -> Result<String> {
    let bad = |reason| Error::InvalidPoolUri {
        uri: uri.to_owned(),
        reason,
    };
    let u = uri.strip_prefix("hlfs:").unwrap_or(uri);
    if u.chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || FORBIDDEN_URI_CHARS.contains(c))
    {
        return Err(bad("it contains a forbidden character"));
    }
    let (scheme, rest) = u
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme://"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if !scheme_ok {
        return Err(bad(
            "the scheme is not lower-case letters, digits, '+', '.', '-'",
        ));
    }
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    if path.len() <= 1 {
        return Err(bad("it names no directory"));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(bad("it has a '.' or '..' component"));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// Escapes text for an XML element (names are checked, but the escaping
/// keeps the XML well-formed whatever a caller passes).
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The XML of an hlfs pool `name` whose volumes live under `uri`.
pub fn pool_xml(name: &str, uri: &str) -> Result<String> {
    check_name("pool", name)?;
    let uri = check_pool_uri(uri)?;
    Ok(format!(
        "<pool type='hlfs'>\n  <name>{}</name>\n  <source>\n    <name>{}</name>\n  </source>\n</pool>\n",
        xml_text(name),
        xml_text(&uri)
    ))
}

/// The XML of a raw volume `name` of `capacity` bytes (the backend rounds
/// it up to 512).
pub fn volume_xml(name: &str, capacity: u64) -> Result<String> {
    check_volume_name(name)?;
    if capacity == 0 {
        return Err(Error::ZeroCapacity(name.to_owned()));
    }
    Ok(format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n  \
         <target><format type='raw'/></target>\n</volume>\n",
        xml_text(name)
    ))
}

/// An hlfs pool of a libvirt connection.
pub struct HlfsPool {
    pool: StoragePool,
    name: String,
    uri: String,
}

impl HlfsPool {
    /// Defines (persistently) the pool `name` over the directory URI `uri`;
    /// [`build`](Self::build) creates the directory, [`start`](Self::start)
    /// activates the pool.
    pub fn define(conn: &Connect, name: &str, uri: &str) -> Result<Self> {
        let xml = pool_xml(name, uri)?;
        let pool = conn
            .define_storage_pool_xml(&xml, 0)
            .op(|| format!("define HLFS pool '{name}' ({uri})"))?;
        Ok(HlfsPool {
            pool,
            name: name.to_owned(),
            uri: check_pool_uri(uri)?,
        })
    }

    /// The names of the connection's hlfs pools (active and inactive), sorted.
    pub fn list_names(conn: &Connect) -> Result<Vec<String>> {
        let pools = conn
            .list_all_storage_pools(VIR_CONNECT_LIST_STORAGE_POOLS_HLFS)
            .op(|| "list hlfs pools".to_owned())?;
        let mut names = pools
            .iter()
            .map(|p| p.name().op(|| "name of an hlfs pool".to_owned()))
            .collect::<Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// The underlying libvirt pool, for calls this type does not wrap.
    pub fn pool(&self) -> &StoragePool {
        &self.pool
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's directory URI (canonical, without `hlfs:`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Creates the pool's directory (`pool-build`).
    pub fn build(&self) -> Result<()> {
        self.pool
            .build(0)
            .op(|| format!("build pool '{}'", self.name))
    }

    /// Activates the pool (`pool-start`); it lists its volumes.
    pub fn start(&self) -> Result<()> {
        self.pool
            .create(0)
            .op(|| format!("start pool '{}'", self.name))
    }

    /// Lists the volumes again (`pool-refresh`).
    pub fn refresh(&self) -> Result<()> {
        self.pool
            .refresh(0)
            .op(|| format!("refresh pool '{}'", self.name))
    }

    /// Deactivates the pool (`pool-destroy`); the volumes stay.
    pub fn destroy(&self) -> Result<()> {
        self.pool
            .destroy()
            .op(|| format!("destroy pool '{}'", self.name))
    }

    /// Removes the pool's (empty) directory (`pool-delete`).
    pub fn delete(&self) -> Result<()> {
        self.pool
            .delete(0)
            .op(|| format!("delete pool '{}'", self.name))
    }

    /// Forgets the pool's definition (`pool-undefine`).
    pub fn undefine(&self) -> Result<()> {
        self.pool
            .undefine()
            .op(|| format!("undefine pool '{}'", self.name))
    }

    /// The `hlfs:` URI libvirt gives volume `name` as its key and path.
    pub fn volume_uri(&self, name: &str) -> String {
        format!("hlfs:{}/{name}", self.uri)
    }

    /// Creates the raw volume `name` of `capacity` bytes (`hlfs create`).
    pub fn create_volume(&self, name: &str, capacity: u64) -> Result<StorageVol> {
        let xml = volume_xml(name, capacity)?;
        StorageVol::create_xml(&self.pool, &xml, 0)
            .op(|| format!("create volume '{name}' in pool '{}'", self.name))
    }

    /// Makes `name` an O(1) clone of `source` (`vol-clone`: the backend
    /// takes a snapshot `libvirt-clone-*` of the source and clones it; the
    /// source cannot be deleted while the clone exists).
    pub fn clone_volume(&self, source: &StorageVol, name: &str) -> Result<StorageVol> {
        let capacity = source
            .info()
            .op(|| format!("info of the source of clone '{name}'"))?
            .capacity;
        let xml = volume_xml(name, capacity)?;
        StorageVol::create_xml_from(&self.pool, &xml, source, 0)
            .op(|| format!("clone volume '{name}' in pool '{}'", self.name))
    }

    /// The volume `name`.
    pub fn volume(&self, name: &str) -> Result<StorageVol> {
        self.pool
            .lookup_storage_vol_by_name(name)
            .op(|| format!("look up volume '{name}' in pool '{}'", self.name))
    }

    /// The names of the pool's volumes, sorted.
    pub fn volume_names(&self) -> Result<Vec<String>> {
        let mut names = self
            .pool
            .list_volumes()
            .op(|| format!("list volumes of pool '{}'", self.name))?;
        names.sort();
        Ok(names)
    }

    /// Writes everything `data` yields into `vol` from offset 0
    /// (`vol-upload`, piped into `hlfs import -n - URI`). Less data than the
    /// volume holds leaves the rest as it was; more fails. Returns the bytes sent.
    pub fn upload(&self, vol: &StorageVol, data: &mut dyn Read) -> Result<u64> {
        let what = || format!("upload into volume '{}'", vol.name().unwrap_or_default());
        let conn = self.pool.connect().op(what)?;
        let stream = Stream::new(&conn, 0).op(what)?;
        vol.upload(&stream, 0, 0, 0).op(what)?;
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let _ = stream.abort();
                    return Err(Error::Io { op: what(), source });
                }
            };
            let mut off = 0;
            while off < n {
                match stream.send(&buf[off..n]) {
                    Ok(k) if k > 0 => off += k as usize,
                    Ok(_) => {
                        // 0 (or -2 for non-blocking streams) never happens
                        // on a blocking stream; treat it as a failure.
                        let _ = stream.abort();
                        return Err(Error::Io {
                            op: what(),
                            source: std::io::Error::other("stream accepted no data"),
                        });
                    }
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(Error::Libvirt {
                            op: what(),
                            source: e,
                        });
                    }
                }
            }
            sent += n as u64;
        }
        stream.finish().op(what)?;
        Ok(sent)
    }

    /// Reads the whole of `vol` into `out` (`vol-download`, from
    /// `hlfs export URI -`). Returns the bytes received (= the capacity).
    pub fn download(&self, vol: &StorageVol, out: &mut dyn Write) -> Result<u64> {
        let what = || format!("download volume '{}'", vol.name().unwrap_or_default());
        let conn = self.pool.connect().op(what)?;
        let stream = Stream::new(&conn, 0).op(what)?;
        vol.download(&stream, 0, 0, 0).op(what)?;
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut got = 0u64;
        loop {
            let n = match stream.recv(&mut buf) {
                Ok(0) => break,
                Ok(n) if n > 0 => n as usize,
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(Error::Io {
                        op: what(),
                        source: std::io::Error::other("stream returned no data"),
                    });
                }
                Err(e) => {
                    let _ = stream.abort();
                    return Err(Error::Libvirt {
                        op: what(),
                        source: e,
                    });
                }
            };
            if let Err(source) = out.write_all(&buf[..n]) {
                let _ = stream.abort();
                return Err(Error::Io { op: what(), source });
            }
            got += n as u64;
        }
        stream.finish().op(what)?;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the backend accepts pass; every unsafe one is refused with
    /// the rule it breaks, before libvirt is called.
    #[test]
    fn volume_names_follow_the_backend_rules() {
        for good in ["vm1", "a.b", "A_b+c-d", "x", &"n".repeat(200)] {
            check_volume_name(good).unwrap();
        }
        for bad in [
            "",
            "../evil",
            "a/b",
            "a%b",
            "a;touch x",
            "$(id)",
            "-rf",
            ".hidden",
            "a\tb",
            "é",
            &"n".repeat(201),
        ] {
            let e = check_volume_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("use letters, digits"), "{e}");
        }
    }

    /// Pool URIs: the forms the backend takes, canonicalised; the rest refused.
    #[test]
    fn pool_uris_follow_the_backend_rules() {
        assert_eq!(
            check_pool_uri("local:///var/lib/hlfs/").unwrap(),
            "local:///var/lib/hlfs"
        );
        assert_eq!(
            check_pool_uri("hlfs:hdfs://nn:9000/vms").unwrap(),
            "hdfs://nn:9000/vms"
        );
        for bad in [
            "/var/lib/hlfs",
            "Local:///x",
            "local://",
            "local:///",
            "local:///a/../b",
            "local:///a/./b",
            "local:///a b",
            "local:///a%b",
            "local:///$(id)",
            "local:///a;b",
        ] {
            assert!(
                matches!(check_pool_uri(bad), Err(Error::InvalidPoolUri { .. })),
                "{bad}"
            );
        }
    }

    /// The XML names the pool type, the source URI and the raw format.
    #[test]
    fn xml_builders() {
        let p = pool_xml("vms", "local:///srv/hlfs/").unwrap();
        assert!(p.starts_with("<pool type='hlfs'>"));
        assert!(p.contains("<name>vms</name>") && p.contains("<name>local:///srv/hlfs</name>"));
        let v = volume_xml("vm1", 1 << 20).unwrap();
        assert!(
            v.contains("<name>vm1</name>")
                && v.contains("<capacity unit='bytes'>1048576</capacity>")
        );
        assert!(v.contains("<format type='raw'/>"));
        assert!(matches!(volume_xml("vm1", 0), Err(Error::ZeroCapacity(_))));
        assert!(matches!(
            pool_xml("a/b", "local:///x"),
            Err(Error::InvalidName { what: "pool", .. })
        ));
    }
}
