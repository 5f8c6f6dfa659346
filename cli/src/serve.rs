//! `hlfs serve`: exports a volume to clients that have no HLFS driver (a
//! stock QEMU, libnbd's tools, the kernel's nbd client) over NBD and as a
//! vhost-user-blk socket, by running `qemu-storage-daemon` from the patched
//! QEMU build with HLFS's block driver. That daemon opens the volume like
//! any QEMU: read-write with the writer lock (a `%snap` read-only), flushes
//! and FUA writes reach the log's flush, and the background cleaner runs.
//!
//! The daemon replaces this process (exec), so signals, the exit status and
//! `--pid-file` are its own. Its arguments are built here, never through a
//! shell; every value is escaped for QEMU's option syntax (a comma doubled),
//! so a URI or path cannot add options.

use anyhow::{bail, Context, Result};
use hlfs::{Error, ErrorKind, VolumeUri};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// How the page cache is used for the volume's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cache {
    /// Bypass the host's page cache (O_DIRECT), as cache=none: the clients cache.
    None,
    /// Through the page cache.
    Writeback,
}

/// What `hlfs serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Volume (`URI` or `URI%snap`, read-only).
    pub uri: String,
    /// NBD listen address: `unix:PATH`, `tcp:HOST:PORT` or `HOST:PORT`.
    pub nbd: Option<String>,
    /// vhost-user-blk socket path.
    pub vhost_user_blk: Option<PathBuf>,
    /// NBD export name (default: the volume's name).
    pub name: Option<String>,
    /// Export read-only.
    pub read_only: bool,
    /// Most NBD clients at once (0: no limit).
    pub connections: u32,
    /// vhost-user-blk queues.
    pub queues: u16,
    /// Page cache use.
    pub cache: Cache,
    /// Write the daemon's pid here.
    pub pid_file: Option<PathBuf>,
    /// Return once the exports are ready, leaving the daemon running.
    pub daemonize: bool,
    /// Only print the daemon's command line.
    pub dry_run: bool,
}

fn usage(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::InvalidArgument, msg).into()
}

/// A value in QEMU's `key=value,...` syntax: commas doubled.
fn q(v: &str) -> String {
    v.replace(',', ",,")
}

/// The `addr.*` options of an NBD listen address.
fn nbd_addr(a: &str) -> Result<String> {
    if let Some(path) = a.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(usage(format!("--nbd {a}: give a socket path after unix:, e.g. unix:/run/hlfs/vm1.sock")));
        }
        return Ok(format!("addr.type=unix,addr.path={}", q(path)));
    }
    let hp = a.strip_prefix("tcp:").unwrap_or(a);
    let Some((host, port)) = hp.rsplit_once(':') else {
        return Err(usage(format!(
            "--nbd {a}: give unix:PATH, tcp:HOST:PORT or HOST:PORT (e.g. unix:/run/hlfs/vm1.sock, 127.0.0.1:10809)"
        )));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port.parse::<u16>().is_err() {
        return Err(usage(format!("--nbd {a}: port {port:?} is not a number from 0 to 65535")));
    }
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(format!("addr.type=inet,addr.host={},addr.port={port}", q(host)))
}

/// Finds `qemu-storage-daemon` with the HLFS driver: `$HLFS_QEMU_STORAGE_DAEMON`,
/// then next to the `qemu-img` on `PATH` (the patched build puts both in
/// one bin dir), then on `PATH`, then the newest cached build.
fn find_daemon() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HLFS_QEMU_STORAGE_DAEMON") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(Error::new(
            ErrorKind::NotFound,
            format!("HLFS_QEMU_STORAGE_DAEMON={}: no such file", p.display())
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in &dirs {
        if d.join("qemu-img").is_file() && d.join("qemu-storage-daemon").is_file() {
            return Ok(d.join("qemu-storage-daemon"));
        }
    }
    for d in &dirs {
        if d.join("qemu-storage-daemon").is_file() {
            return Ok(d.join("qemu-storage-daemon"));
        }
    }
    let cache = std::env::var_os("HLFS_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/hlfs-build".into());
    let mut built: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("qemu-"))
        .map(|e| e.path().join("bin/qemu-storage-daemon"))
        .filter(|p| p.is_file())
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    built.sort();
    if let Some((_, p)) = built.pop() {
        return Ok(p);
    }
    bail!(Error::new(
        ErrorKind::NotFound,
        "hlfs serve runs qemu-storage-daemon from the patched QEMU, and none was found: build it with \
         `bash qemu-patch/build.sh` (it prints its bin dir) and put that dir on PATH, or set \
         HLFS_QEMU_STORAGE_DAEMON to the binary"
    ));
}

/// The daemon's arguments for `a` (without the program).
pub fn daemon_args(a: &ServeArgs) -> Result<Vec<String>> {
    let u = VolumeUri::parse(&a.uri)?;
    if a.nbd.is_none() && a.vhost_user_blk.is_none() {
        return Err(usage(format!(
            "hlfs serve {}: say how to export it: --nbd unix:PATH or --nbd HOST:PORT, and/or --vhost-user-blk PATH",
            a.uri
        )));
    }
    let read_only = a.read_only || u.snapshot.is_some();
    let canonical = u.to_string();
    let mut blockdev = format!("driver=hlfs,node-name=hlfs0,uri={}", q(&canonical));
    blockdev.push_str(if read_only { ",read-only=on" } else { ",read-only=off" });
    blockdev.push_str(match a.cache {
        Cache::None => ",cache.direct=on",
        Cache::Writeback => ",cache.direct=off",
    });
    // The block layer's discard passes guest TRIM down (the log drops the blocks).
    blockdev.push_str(",discard=unmap");
    let mut v = vec!["--blockdev".to_string(), blockdev];
    let writable = if read_only { "off" } else { "on" };
    if let Some(addr) = &a.nbd {
        let mut server = nbd_addr(addr)?;
        if a.connections > 0 {
            server.push_str(&format!(",max-connections={}", a.connections));
        }
        v.push("--nbd-server".into());
        v.push(server);
        let name = match &a.name {
            Some(n) => n.clone(),
            None => u.path.rsplit('/').next().unwrap_or("hlfs").to_string(),
        };
        v.push("--export".into());
        v.push(format!("type=nbd,id=nbd0,node-name=hlfs0,name={},writable={writable}", q(&name)));
    }
    if let Some(sock) = &a.vhost_user_blk {
        let s = sock.to_str().ok_or_else(|| usage(format!("--vhost-user-blk {}: not UTF-8", sock.display())))?;
        if a.queues == 0 {
            return Err(usage("--queues must be at least 1".into()));
        }
        v.push("--export".into());
        v.push(format!(
            "type=vhost-user-blk,id=vub0,node-name=hlfs0,addr.type=unix,addr.path={},writable={writable},num-queues={}",
            q(s),
            a.queues
        ));
    }
    if let Some(p) = &a.pid_file {
        v.push("--pidfile".into());
        v.push(p.to_str().ok_or_else(|| usage(format!("--pid-file {}: not UTF-8", p.display())))?.to_string());
    }
    if a.daemonize {
        v.push("--daemonize".into());
    }
    Ok(v)
}

/// Runs `hlfs serve`: prints what will be served, then becomes the daemon.
pub fn serve(a: &ServeArgs) -> Result<()> {
    let args = daemon_args(a)?;
    let daemon = find_daemon()?;
    if a.dry_run {
        println!("{} {}", daemon.display(), args.join(" "));
        return Ok(());
    }
    if let Some(p) = &a.vhost_user_blk {
        remove_stale_socket(p)?;
    }
    if let Some(path) = a.nbd.as_deref().and_then(|n| n.strip_prefix("unix:")) {
        remove_stale_socket(Path::new(path))?;
    }
    let mut what = Vec::new();
    if let Some(n) = &a.nbd {
        what.push(format!("NBD at {n}"));
    }
    if let Some(p) = &a.vhost_user_blk {
        what.push(format!("vhost-user-blk at {}", p.display()));
    }
    eprintln!(
        "hlfs serve: {} over {}{} (qemu-storage-daemon {}; stop it with Ctrl-C or SIGTERM)",
        a.uri,
        what.join(" and "),
        if a.read_only || a.uri.contains('%') { ", read-only" } else { "" },
        daemon.display()
    );
    let err = std::process::Command::new(&daemon).args(&args).exec();
    Err(err).with_context(|| format!("running {}", daemon.display()))
}

/// A socket file left by a server that is gone would make the daemon's
/// bind fail: remove it, but only a socket, and only if nothing listens.
fn remove_stale_socket(p: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(m) = std::fs::symlink_metadata(p) else { return Ok(()) };
    if !m.file_type().is_socket() {
        return Err(usage(format!("{} exists and is not a socket; choose another path", p.display())));
    }
    if std::os::unix::net::UnixStream::connect(p).is_ok() {
        bail!(Error::new(
            ErrorKind::InUse,
            format!("{}: a server already listens there; stop it or choose another path", p.display())
        ));
    }
    std::fs::remove_file(p).with_context(|| format!("removing the stale socket {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServeArgs {
        ServeArgs {
            uri: "local:///var/lib/hlfs/vm1".into(),
            nbd: Some("unix:/run/x.sock".into()),
            vhost_user_blk: None,
            name: None,
            read_only: false,
            connections: 0,
            queues: 1,
            cache: Cache::None,
            pid_file: None,
            daemonize: false,
            dry_run: false,
        }
    }

    #[test]
    fn commas_cannot_add_options() {
        let a = ServeArgs { uri: "local:///tmp/a,read-only=off".into(), name: Some("n,x=y".into()), ..base() };
        let v = daemon_args(&a).unwrap();
        assert!(v[1].contains("uri=local:///tmp/a,,read-only=off,read-only=off"), "{v:?}");
        assert!(v.iter().any(|s| s.contains("name=n,,x=y,")), "{v:?}");
    }

    #[test]
    fn snapshots_are_read_only_and_addresses_parse() {
        let a = ServeArgs { uri: "local:///v%s1".into(), nbd: Some("127.0.0.1:10809".into()), ..base() };
        let v = daemon_args(&a).unwrap();
        assert!(v[1].contains("read-only=on") && v.iter().any(|s| s.ends_with("writable=off")), "{v:?}");
        assert!(v.contains(&"addr.type=inet,addr.host=127.0.0.1,addr.port=10809".to_string()), "{v:?}");
        for bad in ["unix:", "nohost", "h:99999"] {
            let e = daemon_args(&ServeArgs { nbd: Some(bad.into()), ..base() }).unwrap_err();
            assert!(e.to_string().contains("--nbd"), "{e}");
        }
        let e = daemon_args(&ServeArgs { nbd: None, ..base() }).unwrap_err();
        assert!(e.to_string().contains("--vhost-user-blk"), "{e}");
    }
}
