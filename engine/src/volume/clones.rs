//! Clones: the references a base keeps to its clones, creating a clone of
//! a snapshot, and deleting volumes.

use super::*;

/// Clone references kept in the base volume's `clones/` directory.
pub(super) fn clones_dir(dir: &str) -> String {
    format!("{dir}/clones")
}

pub(super) fn clone_ref_name(child: &str) -> String {
    // FNV-1a, enough to give each child its own file name.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in child.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// (snapshot id, child URI) for every registered clone of the volume at `dir`.
pub(super) fn read_clone_refs(backend: &dyn Backend, dir: &str) -> Result<Vec<(u64, String, String)>> {
    let cd = clones_dir(dir);
    let names = match backend.list(&cd) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        let path = format!("{cd}/{n}");
        let f = backend.open_read(&path)?;
        let mut b = vec![0u8; f.len()?.min(8192) as usize];
        f.read_exact_at(0, &mut b)?;
        let text = String::from_utf8_lossy(&b);
        let mut id = None;
        let mut child = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("snapshot_id=") {
                id = v.parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("child=") {
                child = Some(v.to_string());
            }
        }
        if let (Some(id), Some(child)) = (id, child) {
            out.push((id, child, path));
        }
    }
    Ok(out)
}

/// Clones of the volume at `dir` that still exist and still use it, as
/// (snapshot id, child URI). Stale references are removed on the way.
pub(super) fn live_clones(backend: &dyn Backend, dir: &str, base_uri: &str) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for (id, child, path) in read_clone_refs(backend, dir)? {
        let alive = match VolumeUri::parse(&child).and_then(|u| Ok((backend::for_uri(&u)?, u))) {
            // Existence is enough: deleting a clone (`hlfs delete`)
            // removes its reference, so a reference to a volume
            // that still exists is live. Opening every clone here would make
            // listing snapshots cost a full open per clone.
            Ok((b, u)) => volume_exists(&*b, &u.path).unwrap_or(true),
            // A backend we cannot reach: assume the clone still needs us.
            Err(_) => true,
        };
        if alive {
            out.push((id, child));
        } else {
            tracing::info!(
                "dropping stale clone reference {path} ({child} no longer uses {base_uri})"
            );
            let _ = backend.delete(&path);
        }
    }
    Ok(out)
}

/// Makes `dst` an O(1) clone of `src` (which must name a snapshot). `dst` is
/// created with `size` (default: the snapshot's size), or, if it exists, must
/// never have been written and have no snapshots.
pub fn clone_volume(src: &str, dst: &str, size: Option<u64>) -> Result<()> {
    let su = parse_uri(src)?;
    let Some(snap) = su.snapshot.clone() else {
        return Err(invalid(format!(
            "clone source {src} names no snapshot; write it as {}%SNAPSHOT (clones are made from snapshots)",
            su
        )));
    };
    let du = parse_uri(dst)?;
    if du.snapshot.is_some() {
        return Err(invalid(format!(
            "clone target {dst} must not name a snapshot"
        )));
    }
    if su.without_snapshot() == du {
        return Err(invalid(format!("cannot clone {src} onto itself")));
    }
    let base = Volume::open(src, &OpenOptions::read_only())?;
    let (snap_id, snap_size, base_uuid) = {
        let st = base.state.read();
        let s = st
            .snapshot_by_name(&snap)
            .expect("view resolved the snapshot");
        (s.id, s.virtual_size, st.uuid)
    };
    drop(base);
    if let Some(sz) = size {
        check_size(sz, "clone size")?;
        if sz < snap_size {
            return Err(invalid(format!(
                "clone size {sz} is smaller than the base snapshot ({snap_size} bytes)"
            )));
        }
    }
    let base_ref = BaseRef {
        uri: su.without_snapshot().to_string(),
        snapshot: snap.clone(),
        snapshot_id: snap_id,
        volume_uuid: base_uuid,
    };
    let dbackend = backend::for_uri(&du)?;
    let exists = volume_exists(&*dbackend, &du.path)?;
    let existing = if exists {
        let v = Volume::open(&du.to_string(), &OpenOptions::default())?;
        {
            let st = v.state.read();
            let written = st.timelines.values().any(|t| t.entries > 0)
                || !st.snapshots.is_empty()
                || st.base.is_some();
            if written {
                return Err(Error::new(
                    ErrorKind::Exists,
                    format!("{du} already holds data or snapshots; clone into a new volume, or into one that was created and never written"),
                ));
            }
            if st.virtual_size < snap_size {
                return Err(invalid(format!(
                    "{du} is {} bytes, smaller than the base snapshot ({snap_size} bytes); resize it first",
                    st.virtual_size
                )));
            }
        }
        Some(v)
    } else {
        None
    };
    // Register with the base first: a reference without a clone is harmless
    // (it is dropped when found stale), a clone without a reference is not.
    let sbackend = backend::for_uri(&su)?;
    let ref_path = format!(
        "{}/{}",
        clones_dir(&su.path),
        clone_ref_name(&du.to_string())
    );
    if sbackend.exists(&ref_path)? {
        sbackend.delete(&ref_path)?;
    }
    let mut f = sbackend.create(&ref_path)?;
    f.append(format!("snapshot_id={snap_id}\nsnapshot={snap}\nchild={du}\n").as_bytes())?;
    f.close()?;
    match existing {
        Some(v) => {
            v.with_writer(|w| v.log_meta(w, Record::SetBase(base_ref)))?;
            v.close()?;
        }
        None => Volume::create_inner(&du.to_string(), size.unwrap_or(snap_size), Some(base_ref))?,
    }
    tracing::info!("cloned {su}%{snap} to {du}");
    Ok(())
}

/// Deletes a volume and everything in its directory. Refused while it is
/// open read-write elsewhere or while clones depend on its snapshots.
pub fn delete_volume(uri: &str) -> Result<()> {
    let u = parse_uri(uri)?;
    if let Some(s) = &u.snapshot {
        return Err(invalid(format!(
            "{uri} names a snapshot; to delete the snapshot use `hlfs snapshot delete {} {s}`",
            u.without_snapshot()
        )));
    }
    let backend = backend::for_uri(&u)?;
    require_exists(&*backend, &u)?;
    let name = u.to_string();
    let lock = WriteLock::acquire(backend.clone(), &u.path, &name)?;
    let clones = live_clones(&*backend, &u.path, &name)?;
    if !clones.is_empty() {
        let list: Vec<String> = clones.into_iter().map(|(_, c)| c).collect();
        return Err(Error::new(
            ErrorKind::InUse,
            format!(
                "volume {name} has clones: {}; delete those clones first",
                list.join(", ")
            ),
        ));
    }
    let readers = crate::registry::live_readers(&*backend, &u.path)?;
    if !readers.is_empty() {
        let list: Vec<String> = readers
            .values()
            .map(|r| format!("pid {} on host {} reading {}", r.pid, r.host, r.what))
            .collect();
        return Err(Error::new(
            ErrorKind::InUse,
            format!("volume {name} is being read: {}; close those readers first", list.join("; ")),
        ));
    }
    // Drop our reference in the base, if we are a clone.
    let base = {
        let v = Volume::open(&name, &OpenOptions::read_only());
        match v {
            Ok(v) => v.state.read().base.clone(),
            Err(e) if e.kind() == ErrorKind::Corrupt => None,
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        }
    };
    if let Some(b) = base {
        if let Ok(bu) = VolumeUri::parse(&b.uri) {
            if let Ok(bb) = backend::for_uri(&bu) {
                let p = format!("{}/{}", clones_dir(&bu.path), clone_ref_name(&name));
                if bb.exists(&p).unwrap_or(false) {
                    let _ = bb.delete(&p);
                }
            }
        }
    }
    if let Some(idir) = backend.local_index_dir(&u.path) {
        if idir.exists() {
            std::fs::remove_dir_all(&idir)
                .map_err(|e| Error::io(format!("removing index {}", idir.display()), e))?;
        }
    } else if let Ok(uuid) = read_uuid(&*backend, &u) {
        // This host's index cache in the default place (HDFS): only a
        // cache, so a failure to remove it is not worth failing the delete.
        let idir = default_index_root().join(hex(&uuid));
        if idir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&idir) {
                tracing::warn!(
                    "volume {name}: could not remove its index cache {}: {e}",
                    idir.display()
                );
            }
        }
    }
    let lock_file = lock::lock_path(&u.path);
    for n in backend.list(&u.path)? {
        let p = format!("{}/{n}", u.path);
        if p == lock_file {
            continue;
        }
        if n == "clones" {
            for c in backend.list(&p).unwrap_or_default() {
                backend.delete(&format!("{p}/{c}"))?;
            }
            backend.remove_dir(&p)?;
            continue;
        }
        backend.delete(&p)?;
    }
    lock.release()?;
    backend.remove_dir(&u.path)?;
    tracing::info!("deleted volume {name}");
    Ok(())
}
