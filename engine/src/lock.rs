//! One read-write opener per volume: an exclusively created `lock` file in
//! the volume directory, naming the holder's pid, host, process start time
//! and pid namespace (the kernel's boot id and the namespace's inode).
//! A lock whose holder is gone (same host name, same boot and pid namespace,
//! pid dead or reused) is taken over.
//! A holder on another host (volumes on HDFS) cannot be checked from here and
//! is never presumed dead: `break_lock` (`hlfs unlock`) removes its lock on
//! an operator's word.

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;

/// Holder details written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Process start time (clock ticks since boot), 0 if unknown.
    pub start: u64,
    /// Where the pid means something: the machine id, the kernel's boot id
    /// and the holder's pid namespace (`MACHINE_ID/BOOT_ID/pid:[INODE]`;
    /// empty in locks written before it existed, and a part is empty where
    /// /proc or /etc does not say). Two machines with one host name differ
    /// in the machine id, a reboot in the boot id (every holder of the old
    /// boot is gone), a container in the pid namespace (its pid cannot be
    /// looked up here).
    pub pid_space: String,
    /// Random number drawn when the lock was taken (0 in locks written
    /// before it existed): tells this lock apart from a later one of the
    /// same process, so a writer whose lock was broken never removes its
    /// successor's.
    pub token: u64,
}

impl Holder {
    pub(crate) fn me() -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            host: hostname(),
            start: process_start(pid).unwrap_or(0),
            pid_space: pid_space(),
            token: rand::random::<u64>() | 1,
        }
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "pid={}\nhost={}\nstart={}\ntoken={}\npid_space={}\n",
            self.pid, self.host, self.start, self.token, self.pid_space
        )
    }

    pub(crate) fn parse(s: &str) -> Option<Holder> {
        let mut h = Holder {
            pid: 0,
            host: String::new(),
            start: 0,
            token: 0,
            pid_space: String::new(),
        };
        for line in s.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "pid" => h.pid = v.parse().ok()?,
                "host" => h.host = v.to_string(),
                "start" => h.start = v.parse().ok()?,
                "token" => h.token = v.parse().ok()?,
                "pid_space" => h.pid_space = v.to_string(),
                _ => {}
            }
        }
        (h.pid != 0).then_some(h)
    }

    /// Whether the holder is certainly gone (only decidable on this
    /// machine): the machine rebooted since it took the lock, or its
    /// process is gone from this boot's (and pid namespace's) table.
    pub(crate) fn is_dead(&self) -> bool {
        if !self.same_machine() {
            return false;
        }
        let mine = pid_space();
        let (theirs, ours) = (PidSpace::parse(&self.pid_space), PidSpace::parse(&mine));
        if !theirs.boot.is_empty() && !ours.boot.is_empty() && theirs.boot != ours.boot {
            return true;
        }
        if !self.is_local() {
            return false;
        }
        match process_start(self.pid) {
            None => true,
            Some(s) => self.start != 0 && s != self.start,
        }
    }

    /// Whether the holder ran on this machine: the same host name and, where
    /// both sides know it, the same machine id.
    fn same_machine(&self) -> bool {
        let mine = pid_space();
        let (theirs, ours) = (PidSpace::parse(&self.pid_space), PidSpace::parse(&mine));
        self.host == hostname()
            && (theirs.machine.is_empty() || ours.machine.is_empty() || theirs.machine == ours.machine)
    }

    /// Whether the holder's pid names a process of our process table: the
    /// same machine and, where the lock records them, the same boot and
    /// pid namespace.
    pub(crate) fn is_local(&self) -> bool {
        let mine = pid_space();
        let (theirs, ours) = (PidSpace::parse(&self.pid_space), PidSpace::parse(&mine));
        self.same_machine()
            && (self.pid_space.is_empty() || (theirs.boot == ours.boot && theirs.pid_ns == ours.pid_ns))
    }
}

/// The parts of `Holder::pid_space`.
struct PidSpace<'a> {
    machine: &'a str,
    boot: &'a str,
    pid_ns: &'a str,
}

impl<'a> PidSpace<'a> {
    /// `MACHINE/BOOT/PIDNS`, or `BOOT/PIDNS` as the first locks with the
    /// field wrote it.
    fn parse(s: &'a str) -> PidSpace<'a> {
        let parts: Vec<&str> = s.splitn(3, '/').collect();
        match parts.as_slice() {
            [m, b, n] => PidSpace { machine: m, boot: b, pid_ns: n },
            [b, n] => PidSpace { machine: "", boot: b, pid_ns: n },
            _ => PidSpace { machine: "", boot: "", pid_ns: s },
        }
    }
}

/// This machine's id, this kernel's boot id and this process's pid
/// namespace, as `MACHINE_ID/BOOT_ID/pid:[INODE]`; empty parts where /etc
/// or /proc does not say.
pub fn pid_space() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let machine = read("/etc/machine-id");
    let boot = read("/proc/sys/kernel/random/boot_id");
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{machine}/{boot}/{ns}")
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The start time of process `pid` of our pid namespace, None if there is
/// no such process or it is a zombie whose threads have all exited (it
/// holds nothing; its parent has not reaped it yet). A leader shows as a
/// zombie while other threads of its group still run: that process lives.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 3 (state) and field 22 (starttime) come after the
    // parenthesised command name.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    if f.next()? == "Z" {
        let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")?.trim().parse::<u32>().ok()))
            .unwrap_or(0);
        if threads <= 1 {
            return None;
        }
    }
    f.nth(18)?.parse().ok()
}

/// A held write lock; released on drop.
#[derive(Debug)]
pub struct WriteLock {
    backend: Arc<dyn Backend>,
    path: String,
    name: String,
    released: bool,
    me: Holder,
}

/// Path of the lock file of the volume in `dir`.
pub fn lock_path(dir: &str) -> String {
    format!("{dir}/lock")
}

fn read_holder(backend: &dyn Backend, path: &str) -> Result<Option<Holder>> {
    let f = match backend.open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.len()?.min(4096) as usize;
    let mut b = vec![0u8; len];
    f.read_exact_at(0, &mut b)?;
    Ok(Holder::parse(&String::from_utf8_lossy(&b)))
}

/// Who holds the write lock of the volume `name` in `dir`, if anyone alive does.
pub fn holder(backend: &dyn Backend, dir: &str, name: &str) -> Result<Option<Holder>> {
    let path = lock_path(dir);
    Ok(read_holder(backend, &path)?.filter(|h| !h.is_stale(name)))
}

/// `Ok` if the lock of the volume `name` in `dir` is still the one with
/// `token` (ours), else `Locked`, saying who holds it now: the fence a
/// writer asks before it goes on after a failure (`log::Fence`).
pub fn check_token(backend: &dyn Backend, dir: &str, name: &str, token: u64) -> Result<()> {
    match read_holder(backend, &lock_path(dir))? {
        Some(h) if h.token == token => Ok(()),
        Some(h) => Err(Error::new(
            ErrorKind::Locked,
            format!(
                "volume {name}: its write lock is now held by pid {} on host {} (it was broken with `hlfs unlock` and the volume taken over); this writer stops",
                h.pid, h.host
            ),
        )),
        None => Err(Error::new(
            ErrorKind::Locked,
            format!("volume {name}: its write lock is gone (broken with `hlfs unlock`?); this writer stops"),
        )),
    }
}

/// Why a lock held by `h` refuses us, and what to do about it. A holder on
/// another host cannot be checked from here: if that host is gone, an
/// operator breaks the lock explicitly.
fn locked_message(name: &str, h: &Holder) -> String {
    let mut m = format!(
        "volume {name} is open read-write by pid {} on host {}; close it there, or open it read-only",
        h.pid, h.host
    );
    if !h.is_local() {
        m.push_str(&format!(
            "; if host {} is down or that process is gone, break the lock with `hlfs unlock {name}` \
             (only then: two writers would damage the volume)",
            h.host
        ));
    }
    m
}

/// Removes the write lock of the volume `name` in `dir` whose holder is
/// gone: dead on this host, or on another host that the operator has made
/// sure no longer runs it. Refuses a holder alive on this host. Returns the
/// holder that was removed (None: there was no lock).
pub fn break_lock(backend: &dyn Backend, dir: &str, name: &str) -> Result<Option<Holder>> {
    let path = lock_path(dir);
    if !backend.exists(&path)? {
        return Ok(None);
    }
    let h = read_holder(backend, &path)?;
    if let Some(h) = &h {
        if h.is_local() && !h.is_stale(name) {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "volume {name} is open read-write by pid {} on this host, which is alive; close it there instead",
                    h.pid
                ),
            ));
        }
    }
    let aside = format!("{path}.broken.{}.{}", std::process::id(), rand::random::<u32>());
    match backend.rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    match backend.delete(&aside) {
        // A writer that took the lock meanwhile may have swept it already.
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match &h {
        Some(h) => tracing::warn!("volume {name}: broke the write lock of pid {} on host {}", h.pid, h.host),
        None => tracing::warn!("volume {name}: removed an unreadable lock file"),
    }
    Ok(Some(h.unwrap_or(Holder {
        pid: 0,
        host: "(unreadable lock file)".to_string(),
        start: 0,
        token: 0,
        pid_space: String::new(),
    })))
}

/// Volumes this process holds, by canonical URI. Keyed by URI, not by
/// backend path: two backends (two HDFS clusters, two memory backends) can
/// hold volumes at the same path, and one of them holding its lock must not
/// make a lock our own crashed handle left in the other look alive. The
/// value is the token of the lock we hold.
fn held() -> &'static parking_lot::Mutex<std::collections::HashMap<String, u64>> {
    static H: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashMap<String, u64>>> =
        std::sync::OnceLock::new();
    H.get_or_init(Default::default)
}

impl Holder {
    /// Gone, or this very process without a live handle (a simulated crash).
    fn is_stale(&self, name: &str) -> bool {
        if self.pid == std::process::id() && self.is_local() {
            return !held().lock().contains_key(name);
        }
        self.is_dead()
    }
}

/// Removes the private files that openers killed mid-way leave next to
/// the lock (`lock.<pid>.<n>` being taken, `lock.stale.*` / `lock.broken.*`
/// being moved aside). Called with the lock held, so no live opener can be
/// about to rename one of them into place. A `lock.<pid>.<n>` is removed
/// only on a backend with a local directory and when no process `pid` runs
/// here: elsewhere its writer may be on another host. Failures are ignored.
fn sweep_leftovers(backend: &dyn Backend, dir: &str, path: &str) {
    let Ok(names) = backend.list(dir) else { return };
    let local = backend.local_index_dir(dir).is_some();
    for n in names {
        let Some(rest) = n.strip_prefix("lock.") else { continue };
        let gone = if rest.starts_with("stale.") || rest.starts_with("broken.") {
            true
        } else {
            local
                && rest
                    .split_once('.')
                    .and_then(|(pid, _)| pid.parse::<u32>().ok())
                    .is_some_and(|pid| process_start(pid).is_none())
        };
        let p = format!("{dir}/{n}");
        if gone && p != path {
            let _ = backend.delete(&p);
        }
    }
}

impl WriteLock {
    /// Takes the write lock of the volume `name` in `dir`.
    pub fn acquire(backend: Arc<dyn Backend>, dir: &str, name: &str) -> Result<WriteLock> {
        let path = lock_path(dir);
        let me = Holder::me();
        for attempt in 0..4 {
            // Write the holder to a private file, then rename it into place:
            // the rename never replaces, so the lock appears whole or not at all.
            let tmp = format!("{path}.{}.{}", me.pid, rand::random::<u32>());
            let mut f = backend.create(&tmp)?;
            f.append(me.encode().as_bytes())?;
            f.close()?;
            let renamed = backend.rename(&tmp, &path);
            match renamed {
                Ok(()) => {
                    held().lock().insert(name.to_string(), me.token);
                    sweep_leftovers(&*backend, dir, &path);
                    return Ok(WriteLock {
                        backend,
                        path,
                        name: name.to_string(),
                        released: false,
                        me,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Exists => {
                    let _ = backend.delete(&tmp);
                }
                Err(e) => {
                    let _ = backend.delete(&tmp);
                    return Err(e);
                }
            }
            let h = read_holder(&*backend, &path)?;
            match h {
                Some(h) if !h.is_stale(name) => {
                    return Err(Error::new(ErrorKind::Locked, locked_message(name, &h)));
                }
                None if attempt == 0 => {
                    // Unreadable: perhaps mid-replacement. Look again shortly.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                h => {
                    // Move the stale lock aside atomically: of several racing
                    // openers, only one rename succeeds.
                    let aside = format!("{path}.stale.{}.{}", me.pid, rand::random::<u32>());
                    match backend.rename(&path, &aside) {
                        Ok(()) => {
                            let _ = backend.delete(&aside);
                            match h {
                                Some(h) => tracing::warn!(
                                    "volume {name}: taking over a stale lock left by pid {} on host {}",
                                    h.pid,
                                    h.host
                                ),
                                None => tracing::warn!("volume {name}: taking over an unreadable lock file"),
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(Error::new(
            ErrorKind::Locked,
            format!("volume {name}: could not take the write lock (contended); try again"),
        ))
    }

    /// The token of this lock (`Holder::token`).
    pub fn token(&self) -> u64 {
        self.me.token
    }

    /// Releases the lock now.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.forget();
        self.remove_if_ours()
    }

    /// This process no longer holds the lock (unless a later lock of ours,
    /// taken after this one was broken, does).
    fn forget(&self) {
        let mut h = held().lock();
        if h.get(&self.name) == Some(&self.me.token) {
            h.remove(&self.name);
        }
    }

    /// Deletes the lock file if it still names us. If our lock was broken
    /// (`hlfs unlock`) and another writer holds the volume now, its lock
    /// stays.
    fn remove_if_ours(&self) -> Result<()> {
        match read_holder(&*self.backend, &self.path)? {
            Some(h) if h != self.me => {
                tracing::warn!(
                    "volume {}: our write lock was broken; it is now held by pid {} on host {}, and stays",
                    self.name,
                    h.pid,
                    h.host
                );
                Ok(())
            }
            None if !self.backend.exists(&self.path)? => Ok(()),
            _ => self.backend.delete(&self.path),
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if !self.released {
            self.forget();
            let _ = self.remove_if_ours();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn taking_the_lock_sweeps_what_killed_openers_left() {
        // Property: leftovers of dead openers go, a private file of a live
        // process stays, and the lock itself is ours.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_string();
        let dead = 0x7fff_fff0u32; // above any pid_max
        let live = std::process::id();
        for n in [format!("lock.{dead}.1"), format!("lock.stale.{dead}.2"), format!("lock.broken.{dead}.3"), format!("lock.{live}.4")] {
            std::fs::write(tmp.path().join(n), b"pid=1\n").unwrap();
        }
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend);
        let l = WriteLock::acquire(backend.clone(), &dir, "local:///x/v").unwrap();
        let mut left: Vec<String> = backend.list(&dir).unwrap();
        left.sort();
        assert_eq!(left, vec!["lock".to_string(), format!("lock.{live}.4")]);
        l.release().unwrap();
    }

    /// A lock from a machine or container with our host name but another
    /// boot or pid namespace: its pid means nothing in our process table,
    /// so a pid that is dead here does not make the holder dead, and the
    /// lock is refused, with the `hlfs unlock` advice; one from our own
    /// namespace with a dead pid is taken over, as is one written before
    /// locks recorded the namespace.
    #[test]
    fn a_holder_with_our_host_name_in_another_pid_namespace_is_not_presumed_dead() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_string();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend);
        let dead = 0x7fff_fff0u32; // above any pid_max
        let lock = |space: Option<&str>| {
            let mut h = format!("pid={dead}\nhost={}\nstart=5\ntoken=7\n", hostname());
            if let Some(sp) = space {
                h.push_str(&format!("pid_space={sp}\n"));
            }
            std::fs::write(tmp.path().join("lock"), h).unwrap();
        };
        let ours = pid_space();
        let p = PidSpace::parse(&ours);
        // Another machine with our host name; a container of ours (same
        // boot, another pid namespace): refused, with the unlock advice.
        for other in [
            format!("another-machine/{}/{}", p.boot, p.pid_ns),
            format!("{}/{}/pid:[1]", p.machine, p.boot),
        ] {
            lock(Some(&other));
            let e = WriteLock::acquire(backend.clone(), &dir, "local:///x/v").expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::Locked, "{other}: {e}");
            assert!(e.to_string().contains("hlfs unlock"), "{e}");
            assert!(break_lock(&*backend, &dir, "local:///x/v").unwrap().is_some());
        }
        // Ours with a dead pid; one from before a reboot of this machine
        // (every process of that boot is gone, even in another pid
        // namespace); one written before locks recorded it: taken over.
        let before_reboot = format!("{}/another-boot/pid:[1]", p.machine);
        for space in [Some(ours.clone()), Some(before_reboot), None] {
            lock(space.as_deref());
            let l = WriteLock::acquire(backend.clone(), &dir, "local:///x/v").expect("taken over");
            l.release().unwrap();
        }
    }
}
