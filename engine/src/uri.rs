//! Volume URIs: `[hlfs:]local:///abs/dir/vol[%snap]` and `[hlfs:]hdfs://[host:port]/path[%snap]`.

use crate::error::{invalid, Result};
use std::fmt;

/// Where a volume's log lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A directory on the local filesystem.
    Local,
    /// HDFS; `authority` is `host:port` or a name service, `None` for the default filesystem.
    Hdfs {
        /// `host:port` or name service, if given.
        authority: Option<String>,
    },
    /// An in-process memory backend registered under a name (tests only).
    Mem {
        /// Registry name of the backend instance.
        name: String,
    },
}

/// A parsed volume URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeUri {
    /// Which backend.
    pub location: Location,
    /// Absolute path of the volume directory on that backend, without a trailing `/`.
    pub path: String,
    /// Snapshot named after `%`, if any.
    pub snapshot: Option<String>,
}

const EXPECTED: &str = "expected local:///absolute/path/volume or hdfs://host:port/path/volume, optionally prefixed with hlfs: and followed by %snapshot";

/// Checks a snapshot name: non-empty, at most 255 bytes, no `%`, `/` or control characters.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(
            "snapshot name is empty; give a name such as snapshot1",
        ));
    }
    if name.len() > 255 {
        return Err(invalid(format!(
            "snapshot name is {} bytes long; at most 255 are allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '%' || *c == '/' || c.is_control())
    {
        return Err(invalid(format!(
            "snapshot name {name:?} contains {c:?}; names may not contain '%', '/' or control characters"
        )));
    }
    Ok(())
}

impl VolumeUri {
    /// Parses a URI as users type it (`hlfs:local:///tmp/testenv/testfs%snapshot1`).
    pub fn parse(input: &str) -> Result<VolumeUri> {
        if input.chars().any(|c| c.is_control()) {
            return Err(invalid(format!(
                "volume URI {input:?} contains control characters; {EXPECTED}"
            )));
        }
        let body = input.strip_prefix("hlfs:").unwrap_or(input);
        let (scheme, rest) = match body.find("://") {
            Some(i) => (&body[..i], &body[i + 3..]),
            None => {
                return Err(invalid(format!(
                    "{input:?} is not a volume URI; {EXPECTED}"
                )));
            }
        };
        let (rest, snapshot) = match rest.find('%') {
            Some(i) => {
                let snap = &rest[i + 1..];
                if snap.is_empty() {
                    return Err(invalid(format!(
                        "{input:?} ends with '%' but no snapshot name; write vol%snapshot1 or drop the '%'"
                    )));
                }
                validate_snapshot_name(snap).map_err(|e| e.context(format!("in {input:?}")))?;
                (&rest[..i], Some(snap.to_string()))
            }
            None => (rest, None),
        };
        let (location, path) = match scheme {
            "local" | "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(format!(
                        "{input:?}: local volumes need an absolute path with three slashes, as in local:///tmp/testenv/testfs"
                    )));
                }
                (Location::Local, rest)
            }
            "hdfs" => {
                let (auth, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => {
                        return Err(invalid(format!(
                            "{input:?}: HDFS URI has no path; {EXPECTED}"
                        )));
                    }
                };
                let authority = if auth.is_empty() {
                    None
                } else {
                    Some(auth.to_string())
                };
                (Location::Hdfs { authority }, path)
            }
            "mem" => {
                let (name, path) = match rest.find('/') {
                    Some(i) if i > 0 => (&rest[..i], &rest[i..]),
                    _ => return Err(invalid(format!("{input:?}: expected mem://name/path"))),
                };
                (
                    Location::Mem {
                        name: name.to_string(),
                    },
                    path,
                )
            }
            s if s.contains(':') => {
                return Err(invalid(format!(
                    "{input:?} mixes schemes ({s:?}); {EXPECTED}"
                )));
            }
            s => {
                return Err(invalid(format!(
                    "{input:?}: unknown scheme {s:?}; {EXPECTED}"
                )));
            }
        };
        let path = normalize_path(input, path)?;
        Ok(VolumeUri {
            location,
            path,
            snapshot,
        })
    }

    /// The same volume without the snapshot part.
    pub fn without_snapshot(&self) -> VolumeUri {
        VolumeUri {
            snapshot: None,
            ..self.clone()
        }
    }

    /// The same volume with `snapshot` selected.
    pub fn with_snapshot(&self, snapshot: &str) -> VolumeUri {
        VolumeUri {
            snapshot: Some(snapshot.to_string()),
            ..self.clone()
        }
    }

    /// The last path component: the volume's name.
    pub fn volume_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

fn normalize_path(input: &str, path: &str) -> Result<String> {
    let mut out = String::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => continue,
            ".." => {
                return Err(invalid(format!(
                    "{input:?}: '..' is not allowed in volume paths"
                )));
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(format!(
            "{input:?} names no volume; add a volume name after the directory"
        )));
    }
    Ok(out)
}

impl fmt::Display for VolumeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Local => write!(f, "local://{}", self.path)?,
            Location::Hdfs { authority } => write!(
                f,
                "hdfs://{}{}",
                authority.as_deref().unwrap_or(""),
                self.path
            )?,
            Location::Mem { name } => write!(f, "mem://{}{}", name, self.path)?,
        }
        if let Some(s) = &self.snapshot {
            write!(f, "%{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_forms() {
        let u = VolumeUri::parse("hlfs:local:///tmp/testenv/testfs%snapshot1").unwrap();
        assert_eq!(u.location, Location::Local);
        assert_eq!(u.path, "/tmp/testenv/testfs");
        assert_eq!(u.snapshot.as_deref(), Some("snapshot1"));
        assert_eq!(u.to_string(), "local:///tmp/testenv/testfs%snapshot1");
        let h = VolumeUri::parse("hdfs://nn:9000/x/y").unwrap();
        assert_eq!(
            h.location,
            Location::Hdfs {
                authority: Some("nn:9000".into())
            }
        );
        let h = VolumeUri::parse("hlfs:hdfs:///x/y").unwrap();
        assert_eq!(h.location, Location::Hdfs { authority: None });
    }

    #[test]
    fn rejects_typos_with_guidance() {
        for bad in [
            "hdfs:local:///x",
            "local://rel/x",
            "local:///x%",
            "/tmp/x",
            "local:///",
            "local:///a/../b",
            "ftp:///x",
        ] {
            let e = VolumeUri::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn validates_snapshot_names() {
        assert!(validate_snapshot_name("snap-1 ok").is_ok());
        assert!(validate_snapshot_name("").is_err());
        assert!(validate_snapshot_name("a/b").is_err());
        assert!(validate_snapshot_name("a\nb").is_err());
        assert!(validate_snapshot_name(&"x".repeat(256)).is_err());
        assert!(validate_snapshot_name(&"x".repeat(255)).is_ok());
    }
}
