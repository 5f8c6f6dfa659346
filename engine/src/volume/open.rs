//! Creating and opening volumes: the log is replayed into the index
//! after the newest checkpoint or the position a clean index recorded,
//! and a read-only view reloads when its writer cleaned the log.

use super::*;

impl Volume {
    /// Creates a new, empty volume of `size` bytes.
    pub fn create(uri: &str, size: u64) -> Result<()> {
        Self::create_inner(uri, size, None)
    }

    pub(super) fn create_inner(uri: &str, size: u64, base: Option<BaseRef>) -> Result<()> {
        let u = parse_uri(uri)?;
        if u.snapshot.is_some() {
            return Err(invalid(format!(
                "{uri}: a new volume cannot name a snapshot; drop the %{}",
                u.snapshot.as_deref().unwrap_or("")
            )));
        }
        check_size(size, "volume size")?;
        let backend = backend::for_uri(&u)?;
        if volume_exists(&*backend, &u.path)? {
            return Err(Error::new(
                ErrorKind::Exists,
                format!("volume {u} already exists; delete it first or pick another name"),
            ));
        }
        // Segment 1 is written under a temporary name and renamed into
        // place, so a crash during creation leaves a whole volume (with its
        // base, for a clone) or none, never a log cut before its
        // VolumeCreate or SetBase record. Temporaries of crashed creations
        // are removed here (a racing creator then fails its rename).
        let creating = format!("{}.creating-", format::segment_name(1));
        if backend.exists(&u.path)? {
            for n in backend.list(&u.path).unwrap_or_default() {
                if n.starts_with(&creating) {
                    let _ = backend.delete(&format!("{}/{n}", u.path));
                }
            }
        }
        if backend.exists(&u.path)?
            && backend
                .list(&u.path)
                .map(|l| !l.is_empty())
                .unwrap_or(false)
        {
            return Err(Error::new(
                ErrorKind::Exists,
                format!(
                    "{u}: {} exists and is not an empty directory; pick another name",
                    u.path
                ),
            ));
        }
        let uuid: [u8; 16] = rand::random();
        let mut buf = Vec::new();
        let created = log::now().0;
        format::encode_record(
            &mut buf,
            0,
            &Record::SegmentHeader {
                uuid,
                segment: 1,
                prev_segment: 0,
                prev_valid_len: 0,
                created,
            },
            &[],
        );
        format::encode_record(
            &mut buf,
            1,
            &Record::VolumeCreate {
                uuid,
                virtual_size: size,
                block_size: BS as u32,
                created,
            },
            &[],
        );
        if let Some(b) = base {
            format::encode_record(&mut buf, 2, &Record::SetBase(b), &[]);
        }
        let tmp = format!("{}/{creating}{:08x}", u.path, rand::random::<u32>());
        let mut f = backend.create(&tmp)?;
        f.append(&buf)?;
        f.close()?;
        if let Err(e) = backend.rename(&tmp, &log::segment_path(&u.path, 1)) {
            let _ = backend.delete(&tmp);
            return Err(match e.kind() {
                // A concurrent creator may also have removed our temporary
                // as a leftover: either way, the other one won.
                ErrorKind::Exists | ErrorKind::NotFound => Error::new(
                    ErrorKind::Exists,
                    format!("volume {u} already exists (created concurrently)"),
                ),
                _ => e,
            });
        }
        tracing::info!("created volume {u} ({size} bytes)");
        Ok(())
    }

    /// Opens a volume. With `%snap`: read-only, the snapshot's contents;
    /// read-write, the volume is first reverted to the snapshot.
    pub fn open(uri: &str, opts: &OpenOptions) -> Result<Volume> {
        if !opts.read_only && !(64 << 10..=1 << 30).contains(&opts.segment_size) {
            return Err(invalid(format!(
                "segment size {} is out of range; use 64 KiB to 1 GiB",
                opts.segment_size
            )));
        }
        let u = parse_uri(uri)?;
        let backend = backend::for_uri_with(&u, opts.hdfs_timeout)?;
        require_exists(&*backend, &u)?;
        let name = u.without_snapshot().to_string();
        let lock = if opts.read_only {
            None
        } else {
            Some(WriteLock::acquire(backend.clone(), &u.path, &name)?)
        };
        // Before the map is loaded: see registry.rs for why.
        let registration = if opts.read_only {
            crate::registry::Registration::register(backend.clone(), &u.path, &u.to_string(), u.snapshot.is_some())
        } else {
            None
        };
        let uuid = read_uuid(&*backend, &u)?;
        let dir = u.path.clone();

        let mut from_cache = false;
        let (index, mut st, from) = if opts.read_only || opts.metadata_only {
            // Search the newest checkpoint in place; only the log after it
            // is replayed, into memory.
            let ckpt = if opts.rebuild_index {
                None
            } else {
                checkpoint::open_newest(&*backend, &dir, &uuid)?
            };
            let (st, from) = match &ckpt {
                Some(c) => (c.state.clone(), c.pos),
                None => (VolState::default(), LogPos::default()),
            };
            (Index::layered(ckpt), st, from)
        } else {
            let idir = match (&opts.index_root, backend.local_index_dir(&dir)) {
                (Some(root), _) => root.join(hex(&uuid)),
                (None, Some(d)) => d,
                (None, None) => default_index_root().join(hex(&uuid)),
            };
            if opts.rebuild_index && idir.exists() {
                std::fs::remove_dir_all(&idir)
                    .map_err(|e| Error::io(format!("removing index {}", idir.display()), e))?;
            }
            std::fs::create_dir_all(&idir).map_err(|e| {
                Error::io(format!("creating index directory {}", idir.display()), e)
            })?;
            let index = match Index::open(&idir) {
                // The index is a cache (the write lock is ours): a damaged
                // one, e.g. after a crash or a full disk interrupted sled,
                // is rebuilt from the checkpoints and the log.
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(
                        "volume {name}: its index {} is damaged ({e}); rebuilding it from the checkpoints and the log",
                        idir.display()
                    );
                    std::fs::remove_dir_all(&idir)
                        .and_then(|()| std::fs::create_dir_all(&idir))
                        .map_err(|e| {
                            Error::io(format!("replacing the damaged index {}", idir.display()), e)
                        })?;
                    Index::open(&idir)?
                }
                r => r?,
            };
            index.set_budget(opts.map_memory)?;
            let clean = index.meta_get("clean")?.as_deref() == Some(&[1u8][..])
                && index.meta_get("uuid")?.as_deref() == Some(&uuid[..]);
            let cached = if clean && !opts.rebuild_index {
                match (index.meta_get("state")?, index.meta_get("pos")?) {
                    (Some(s), Some(p)) => VolState::decode(&s).ok().zip(LogPos::decode(&p).ok()),
                    _ => None,
                }
            } else {
                None
            };
            // A cached index is only a cache: another host may have written
            // the volume since (HDFS), or the log may have been restored
            // from elsewhere. Use it only if the log still runs through the
            // position it recorded.
            let tail = index.meta_get("tail")?;
            let cached = match cached {
                Some((st, pos))
                    if log_passes_through(&*backend, &dir, &uuid, pos)?
                        && match tail.as_deref() {
                            None => true,
                            Some(t) => log_tail(&*backend, &dir, pos).ok().as_deref() == Some(t),
                        } =>
                {
                    Some((st, pos))
                }
                Some(_) => {
                    tracing::info!("volume {name}: the cached index does not match the log; reloading from checkpoint and log");
                    None
                }
                None => None,
            };
            let cached = match cached {
                Some(x) => match index.load_cached() {
                    Ok(()) => Some(x),
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!("volume {name}: the cached index is damaged ({e}); reloading from checkpoint and log");
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            from_cache = cached.is_some();
            let (st, from) = match cached {
                Some(x) => x,
                None => {
                    if clean || index.meta_get("uuid")?.is_some() {
                        tracing::info!("volume {name}: index was not closed cleanly; reloading from checkpoint and log");
                    }
                    index.clear()?;
                    Self::load_checkpoint(&*backend, &dir, &uuid, &index, opts)?
                }
            };
            index.meta_put("uuid", &uuid)?;
            index.meta_put("clean", &[0])?;
            index.flush()?;
            (index, st, from)
        };

        if !opts.read_only && backend.has_leases() {
            close_open_segments(&*backend, &dir, &name)?;
        }
        let salvage = opts.rebuild_index;
        let end = match replay(&*backend, &dir, &uuid, &index, &mut st, from, salvage) {
            Err(e) if from_cache && e.kind() == ErrorKind::Corrupt => {
                // The log after the cached position does not fit it: drop
                // the cache and replay from the newest checkpoint instead.
                tracing::info!(
                    "volume {name}: the cached index does not fit the log ({e}); reloading"
                );
                index.clear()?;
                let (s, f) = Self::load_checkpoint(&*backend, &dir, &uuid, &index, opts)?;
                st = s;
                replay(&*backend, &dir, &uuid, &index, &mut st, f, salvage)?
            }
            Err(e) if e.kind() == ErrorKind::Corrupt && !salvage && !opts.read_only => {
                return Err(corrupt(format!(
                    "{e}; `hlfs fsck --rebuild-index {name}` rebuilds the index from every intact record"
                )));
            }
            r => r?,
        };
        if st.uuid != uuid {
            return Err(corrupt(format!(
                "volume {name}: the log does not start with a volume record"
            )));
        }
        let mut writer = (!opts.read_only).then(|| {
            LogWriter::new(
                backend.clone(),
                &dir,
                uuid,
                opts.segment_size,
                end.max_segment + 1,
                end.last,
                end.next_seq,
            )
        });
        if let Some(w) = writer.as_mut() {
            w.set_direct(opts.direct_io && backend.can_bypass_cache());
            w.set_rewrite(opts.rewrite_attempts, opts.rewrite_wait);
            // Log bytes after the newest checkpoint, across earlier sessions
            // too: they decide when the next checkpoint is due.
            let ckpt = checkpoint::newest_position(&*backend, &dir, &uuid)?.unwrap_or_default();
            w.since_checkpoint = log_bytes_after(&*backend, &dir, &uuid, ckpt, end.last)?;
            if backend.has_leases() {
                // HDFS: a writer whose lock was broken (`hlfs unlock`) may
                // still run on another host. Recover the leases of segments
                // past the end of the log (its open one, if any: its next
                // append or flush then fails) and take the next segment
                // number (its next segment create fails).
                for s in log::list_segments(&*backend, &dir)? {
                    if s > end.last.0 {
                        if let Err(e) = backend.recover_lease(&log::segment_path(&dir, s)) {
                            tracing::warn!(
                                "volume {name}: recovering the lease of segment {s}: {e}"
                            );
                        }
                    }
                }
                w.claim()?;
            } else {
                // Segments past the end of the log that no valid header
                // joins to it: a crash came before their header went out
                // (the log writes a segment's header only once every
                // earlier one is durable), or during their creation.
                // Nothing in them was acknowledged, and no reader follows
                // the chain into them.
                for &s in end.abandoned.iter().filter(|&&s| s > end.last.0) {
                    let path = log::segment_path(&dir, s);
                    match backend.delete(&path) {
                        Ok(()) => tracing::info!(
                            "volume {name}: removed segment {} (past the end of the log, never acknowledged)",
                            crate::format::segment_name(s)
                        ),
                        Err(e) => tracing::warn!("volume {name}: removing {path}: {e}"),
                    }
                }
            }
        }
        let active_segment = writer
            .as_ref()
            .map(|w| w.active_segment.clone())
            .unwrap_or_else(|| Arc::new(AtomicU64::new(u64::MAX)));

        let base = match &st.base {
            None => None,
            Some(b) => {
                let bu = format!("{}%{}", b.uri, b.snapshot);
                let bv = Volume::open(
                    &bu,
                    // Only the index location carries over: a rebuild of the
                    // clone must not replay its base's whole log too.
                    &OpenOptions {
                        read_only: true,
                        index_root: opts.index_root.clone(),
                        hdfs_timeout: opts.hdfs_timeout,
                        ..Default::default()
                    },
                )
                .map_err(|e| e.context(format!("opening base {bu} of clone {name}")))?;
                if bv.state.read().uuid != b.volume_uuid {
                    return Err(corrupt(format!(
                        "clone {name}: the volume at {} is not the one it was cloned from (UUID differs)",
                        b.uri
                    )));
                }
                let bv = Arc::new(bv);
                bv.watch();
                Some(bv)
            }
        };

        let view = match (&u.snapshot, opts.read_only) {
            (Some(s), true) => {
                let snap = st
                    .snapshot_by_name(s)
                    .ok_or_else(|| Self::no_snapshot(&st, &name, s))?;
                Some((snap.timeline, snap.virtual_size))
            }
            _ => None,
        };
        let direct = opts.direct_io && backend.can_bypass_cache();
        let vol = Volume {
            uri: u.clone(),
            backend,
            dir,
            read_only: opts.read_only,
            view,
            index: RwLock::new(Arc::new(index)),
            state: RwLock::new(st),
            writer: Mutex::new(writer),
            active_segment,
            readers: Mutex::new(HashMap::new()),
            direct: AtomicBool::new(direct),
            base,
            lock: Mutex::new(lock),
            opts: opts.clone(),
            closed: AtomicBool::new(false),
            view_generation: AtomicU64::new(0),
            reloading: Mutex::new(()),
            background: Mutex::new(None),
            checkpoint_retry: Arc::new(AtomicBool::new(false)),
            registration,
        };
        if let Some(w) = vol.writer.lock().as_mut() {
            // A segment written again under another number (HDFS, after a
            // failed write): the map follows it at once.
            let index = vol.index();
            w.set_on_rename(Arc::new(move |m| index.relocate(m)));
            if let Some(token) = vol.lock.lock().as_ref().map(|l| l.token()) {
                let (backend, dir, name) = (vol.backend.clone(), vol.dir.clone(), name.clone());
                w.set_fence(Arc::new(move || lock::check_token(&*backend, &dir, &name, token)));
            }
            // A VM state stream that no snapshot claimed: the savevm that
            // wrote it died before its snapshot.
            vol.drop_pending_vmstate(w)?;
        }
        if let (Some(s), false) = (&u.snapshot, opts.read_only) {
            vol.snapshot_revert(s)?;
        }
        Ok(vol)
    }

    pub(super) fn load_checkpoint(
        backend: &dyn Backend,
        dir: &str,
        uuid: &[u8; 16],
        index: &Index,
        opts: &OpenOptions,
    ) -> Result<(VolState, LogPos)> {
        if opts.rebuild_index {
            let base = cleaner::log_base(backend, dir, uuid)?;
            if base == LogPos::default() {
                return Ok((VolState::default(), base));
            }
            // The cleaner retired the log's first segments: the oldest
            // checkpoint with an intact log after it is the rebuild's base.
            tracing::warn!(
                "{dir}: the log's start was cleaned; rebuilding from the checkpoint at segment {}",
                base.segment
            );
            for seq in checkpoint::list(backend, dir)? {
                if checkpoint::position(backend, dir, seq, uuid).ok() == Some(base) {
                    let l = checkpoint::load(backend, dir, seq, uuid, index)?;
                    return Ok((l.state, l.pos));
                }
            }
        }
        if let Some(l) = checkpoint::load_newest(backend, dir, uuid, index)? {
            return Ok((l.state, l.pos));
        }
        Ok((VolState::default(), LogPos::default()))
    }

    /// A read-only view loads the map once, at open. If the volume's writer
    /// cleans it meanwhile, blocks move to new segments and the old ones
    /// are deleted after the grace period (design.md §13); the view then
    /// fails with `NotFound` (a segment, or the checkpoint it searches).
    /// This loads the newest checkpoint and log again, as a new open would.
    /// A snapshot view reads the same data afterwards (a snapshot never
    /// changes); a view of the head sees the head as of the reload.
    pub(super) fn reload_view(&self, seen_generation: u64) -> Result<()> {
        let _g = self.reloading.lock();
        if self.view_generation.load(Ordering::Acquire) != seen_generation {
            return Ok(()); // another reader reloaded meanwhile
        }
        let uuid = self.state.read().uuid;
        let ckpt = checkpoint::open_newest(&*self.backend, &self.dir, &uuid)?;
        let (mut st, from) = match &ckpt {
            Some(c) => (c.state.clone(), c.pos),
            None => (VolState::default(), LogPos::default()),
        };
        let index = Index::layered(ckpt);
        replay(
            &*self.backend,
            &self.dir,
            &uuid,
            &index,
            &mut st,
            from,
            false,
        )?;
        if let (Some((tl, _)), Some(name)) = (self.view, &self.uri.snapshot) {
            if st.snapshot_by_name(name).map(|s| s.timeline) != Some(tl) {
                return Err(not_found(format!(
                    "{}: snapshot {name:?} was deleted while this view was open",
                    self.uri
                )));
            }
        }
        let mut state = self.state.write(); // no resolve runs meanwhile
        *self.index.write() = Arc::new(index);
        *state = st;
        self.readers.lock().clear();
        self.view_generation.fetch_add(1, Ordering::AcqRel);
        drop(state);
        tracing::info!(
            "{}: reloaded the read-only view (its writer cleaned the log)",
            self.uri
        );
        if let Some(r) = &self.registration {
            r.map_reloaded();
        }
        Ok(())
    }

    /// Ends this read-only view's reader registration early: for a view
    /// that will not be read any more (a flattened clone's base).
    pub(crate) fn close_registration(&self) {
        if let Some(r) = &self.registration {
            r.close();
        }
    }

    /// How many times this read-only view has loaded its map again
    /// (`reload_view`: a segment it needed was gone, or the cleaner waited
    /// for it after `watch`).
    pub fn view_reloads(&self) -> u64 {
        self.view_generation.load(Ordering::Acquire)
    }

    /// Lets a read-only snapshot view load its map again when the writer's
    /// cleaner waits for it (registry.rs), instead of holding retired
    /// segments until it closes. For handles that live long: a clone's
    /// base, QEMU's nodes.
    pub fn watch(self: &Arc<Self>) {
        let Some(r) = &self.registration else { return };
        let me = Arc::downgrade(self);
        r.set_refresh(Box::new(move || match me.upgrade() {
            Some(v) => {
                let g = v.view_generation.load(Ordering::Acquire);
                v.reload_view(g)
            }
            None => Ok(()),
        }));
    }
}

/// Segments, from the highest number down, that a read-write opener makes
/// sure are closed before it reads the log (`close_open_segments`).
const LEASE_CHECK: usize = 16;

/// How long a read-write opener waits for HDFS to close a dead writer's
/// segments (lease recovery) before it gives up.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// On backends with leases (HDFS): a writer that died (QEMU killed, its
/// host lost) leaves its active segment open, and HDFS shows readers an
/// open file only up to its last complete block, not what its flushes
/// hsynced. So a read-write opener recovers the leases of the newest
/// segments and waits until HDFS has closed them, with everything the
/// DataNodes hold, before it reads the log: no acknowledged write is left
/// out of sight. Closed segments answer at once.
fn close_open_segments(backend: &dyn Backend, dir: &str, name: &str) -> Result<()> {
    let segs = log::list_segments(backend, dir)?;
    let mut open: Vec<u64> = Vec::new();
    for &s in segs.iter().rev().take(LEASE_CHECK) {
        if !backend.recover_lease(&log::segment_path(dir, s))? {
            open.push(s);
        }
    }
    if open.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "volume {name}: waiting for HDFS to close segment(s) {open:?} of a writer that is gone (lease recovery)"
    );
    let start = std::time::Instant::now();
    while !open.is_empty() {
        if start.elapsed() > LEASE_WAIT {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "volume {name}: HDFS has not closed segment(s) {} of the writer that held the volume within {} s (lease recovery; are DataNodes down?); try again later",
                    open.iter().map(|s| crate::format::segment_name(*s)).collect::<Vec<_>>().join(", "),
                    LEASE_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut still = Vec::new();
        for s in open {
            if !backend.recover_lease(&log::segment_path(dir, s))? {
                still.push(s);
            }
        }
        open = still;
    }
    tracing::info!("volume {name}: lease recovery done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
