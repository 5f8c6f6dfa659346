/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libhlfs: the C ABI of the HLFS engine (Rust), used by QEMU's block/hlfs.c.
 *
 * Conventions
 *  - Every function that can fail returns 0 (or a non-negative count) on
 *    success and a negative errno on failure.
 *  - Functions taking `char **errp` store a heap-allocated, NUL-terminated,
 *    human-readable message there on failure (when errp is not NULL).  The
 *    caller owns it and must release it with hlfs_string_free().  On success
 *    *errp is left untouched.
 *  - Strings passed in are borrowed for the duration of the call only.
 *  - An hlfs_volume is thread-safe: pread/pwrite/flush/discard/block_status
 *    may be called concurrently from many threads.  hlfs_close() must not
 *    race with any other call on the same handle.
 *  - No Rust panic ever unwinds into C: a panic is turned into -EIO.
 */
#ifndef HLFS_H
#define HLFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * ABI version.  The shared library's SONAME is libhlfs.so.<HLFS_ABI_VERSION>
 * (engine/build.rs reads it from this line), and hlfs.pc's Version is the
 * crate version.  Bump it when a change breaks programs built against the
 * previous header: a function removed or renamed, its parameters or return
 * value changed in type or meaning, a struct member added, removed, moved or
 * resized, a constant's value changed.  Adding a function, a flag bit old
 * callers never pass, or an option key (hlfs_open_opts) does not bump it.
 * engine/tests/c_layout.rs checks every struct below against Rust's.
 */
#define HLFS_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hlfs_volume hlfs_volume;

/* Flags for hlfs_open(). */
#define HLFS_OPEN_RDONLY 0u
#define HLFS_OPEN_RDWR   1u
/* Bypass the host page cache: segments are written and read with O_DIRECT
 * (QEMU's cache=none and directsync).  Local volumes only; ignored on HDFS. */
#define HLFS_OPEN_DIRECT 2u

/* Largest snapshot name in bytes, excluding the NUL. */
#define HLFS_SNAPSHOT_NAME_MAX 255

typedef struct hlfs_snapshot_info {
    char     name[HLFS_SNAPSHOT_NAME_MAX + 1]; /* NUL-terminated */
    uint64_t id;            /* unique, increasing */
    uint64_t ctime_sec;     /* creation time, seconds since the epoch */
    uint32_t ctime_nsec;
    uint64_t virtual_size;  /* size of the volume when the snapshot was taken */
    uint64_t bytes;         /* bytes held by this snapshot's own timeline */
    uint64_t vm_state_size; /* bytes of VM state saved with it (0: disk-only) */
    uint64_t vm_clock_nsec; /* the guest clock when that state was saved */
} hlfs_snapshot_info;

/* Release a message returned through errp (NULL is fine). */
void hlfs_string_free(char *s);

/* The library version, e.g. "0.1.0".  Static string; do not free. */
const char *hlfs_version(void);

/* Create a new, empty volume of `size` bytes (a multiple of 512). */
int hlfs_create(const char *uri, uint64_t size, char **errp);

/*
 * Make `uri` an O(1) clone of `base` (which must name a snapshot:
 * "local:///dir/vol%snap").  If `uri` does not exist it is created with
 * `size` bytes (0 = the snapshot's size).  If it exists, it must never have
 * been written and have no snapshots.
 */
int hlfs_clone(const char *base, const char *uri, uint64_t size, char **errp);

/*
 * Open a volume.  `uri` may carry "%snap": read-only, that is the snapshot's
 * frozen contents; read-write, the volume is reverted to that snapshot (the
 * previous head is kept as an automatically named snapshot).
 * On success *out holds a handle to be released with hlfs_close().
 */
int hlfs_open(const char *uri, uint32_t flags, hlfs_volume **out, char **errp);

/*
 * hlfs_open() with tunables: keys[i] is set to values[i] for i < count
 * (NUL-terminated strings; count 0 is hlfs_open()).  The keys are the
 * names of QEMU's BlockdevOptionsHlfs members and libvirt's <hlfs>
 * attributes; a key not given falls back to its environment variable, if
 * any, then to the default:
 *   cleaner           "on" / "off": the background cleaner of a read-write
 *                     handle                               (HLFS_GC; on)
 *   cleaner-interval  seconds between its checks     (HLFS_GC_INTERVAL; 30)
 *   cleaner-ratio     clean once the log holds more than this many bytes
 *                     per live byte, at least 1          (HLFS_GC_RATIO; 1.5)
 *   cleaner-min-dead  ... and at least this many dead bytes
 *                                                (HLFS_GC_MIN_DEAD; 256M)
 *   cleaner-rate      bytes per second its copies may append
 *                                                    (HLFS_GC_RATE; 32M)
 *   index-dir         absolute directory for the volume's index (a cache
 *                     of the log), as DIR/<volume uuid>.  Default: a local
 *                     volume's own index/ subdirectory; on HDFS
 *                     $HLFS_INDEX_DIR, else $XDG_CACHE_HOME/hlfs/index,
 *                     else ~/.cache/hlfs/index
 *   hdfs-timeout      seconds a NameNode call of this volume may take,
 *                     retries included; data transfers get six times it
 *                                                 (HLFS_HDFS_TIMEOUT; 20)
 *   map-memory        bytes of block map kept in memory, at least 1M
 *                                                 (HLFS_MAP_MEMORY; 512M)
 * Sizes are bytes, optionally with a binary suffix (K, M, G, T).  An
 * unknown key or a bad value fails with -EINVAL and a message naming the
 * key.  (HLFS_READER_HEARTBEAT stays process-wide: one thread beats for
 * every reader of the process.)
 */
int hlfs_open_opts(const char *uri, uint32_t flags,
                   const char *const *keys, const char *const *values,
                   size_t count, hlfs_volume **out, char **errp);

/* Flush, release the write lock, free the handle.  NULL is fine. */
void hlfs_close(hlfs_volume *vol);

/* Reads/writes: offset and len must be multiples of 512 and lie inside the
 * volume.  Reads of never-written areas return zeros. */
int hlfs_pread(hlfs_volume *vol, void *buf, uint64_t len, uint64_t offset);
int hlfs_pwrite(hlfs_volume *vol, const void *buf, uint64_t len, uint64_t offset);
/* The same with a scatter-gather list: the request is the concatenation of
 * the iovcnt buffers (any lengths; their sum follows the rules above).  A
 * write is gathered straight into the log, so the caller needs no bounce
 * buffer, and the buffers may change meanwhile (guest memory): checksums
 * are taken from the log's own copy. */
int hlfs_preadv(hlfs_volume *vol, const struct iovec *iov, int iovcnt, uint64_t offset);
int hlfs_pwritev(hlfs_volume *vol, const struct iovec *iov, int iovcnt, uint64_t offset);
/* hlfs_pwritev if it can complete at once: no I/O and no waiting for a lock
 * (a 4 KiB-aligned write that the log's in-memory tail takes).  Returns 0
 * when done, -EAGAIN when the caller should call hlfs_pwritev instead (from
 * a thread that may block), another negative errno on error.  QEMU's event
 * loop calls it first, so most writes need no thread hop. */
int hlfs_try_pwritev(hlfs_volume *vol, const struct iovec *iov, int iovcnt, uint64_t offset);
/* hlfs_preadv if it can complete at once: at most 64 KiB (a larger copy is
 * better spread over worker threads), and every block is a hole, in the
 * log's memory or in the host's page cache (never with HLFS_OPEN_DIRECT),
 * and no lock it needs is busy.  Returns 0 when done, -EAGAIN otherwise:
 * the caller then calls hlfs_preadv from a thread that may block (the
 * buffers may hold anything meanwhile).  It reports no other error; the
 * blocking call does. */
int hlfs_try_preadv(hlfs_volume *vol, const struct iovec *iov, int iovcnt, uint64_t offset);
/* Returns after every write that completed before the call is durable.
 * Concurrent flushes share one sync of the log (group commit), so a FUA
 * write is a write followed by this. */
int hlfs_flush(hlfs_volume *vol);
/* Switches an open volume to bypassing the host page cache (on != 0, as
 * HLFS_OPEN_DIRECT at open) or to using it: QEMU reopening a drive with
 * another cache mode.  Seals the segment being written.  0 or -errno. */
int hlfs_set_direct(hlfs_volume *vol, int on);
/* Both make the range read as zeros and unmap it. */
int hlfs_discard(hlfs_volume *vol, uint64_t offset, uint64_t len);
int hlfs_write_zeroes(hlfs_volume *vol, uint64_t offset, uint64_t len);

/* Virtual size in bytes. */
int hlfs_get_length(hlfs_volume *vol, uint64_t *out);
/* 1 if the volume is a clone (unwritten blocks read from its base), 0 if
 * they read as zeros, or a negative errno.  Cheap. */
int hlfs_is_clone(hlfs_volume *vol);
/* Grow the volume (shrinking is refused with -ENOTSUP). */
int hlfs_truncate(hlfs_volume *vol, uint64_t size, char **errp);
/* Bytes the volume's log occupies in its backend. */
int hlfs_get_allocated(hlfs_volume *vol, uint64_t *out);

/*
 * Block status of [offset, offset+len): *allocated is set to 1 if the first
 * block of the range holds data (in this volume or a clone's base), 0 if it
 * reads as zeros; *pnum to how many bytes from offset share that status.
 * *is_zero is set to 1 for ranges known to read as zeros.
 */
int hlfs_block_status(hlfs_volume *vol, uint64_t offset, uint64_t len,
                      int *allocated, int *is_zero, uint64_t *pnum);

/* Space and lineage of an open volume (qemu-img info), from memory: no
 * I/O, so it answers while the backend is out of reach.  The log's size is
 * hlfs_get_allocated(), which lists the backend. */
typedef struct hlfs_volume_info {
    uint64_t live_bytes;      /* bytes of blocks the head, a snapshot or a clone reads */
    uint64_t head_bytes;      /* bytes written since the last snapshot */
    char *base_uri;           /* a clone's base volume, else NULL (hlfs_string_free) */
    char *base_snapshot;      /* a clone's base snapshot, else NULL (hlfs_string_free) */
} hlfs_volume_info;
int hlfs_get_info(hlfs_volume *vol, hlfs_volume_info *out, char **errp);
/* Copy what a clone reads from its base into it and drop the base (hlfs
 * flatten); nothing to do for a volume that is not a clone.  0 or -errno. */
int hlfs_flatten(hlfs_volume *vol, char **errp);

/*
 * Verify the volume at `uri` like `hlfs fsck` (every record, block checksum
 * and checkpoint); with rebuild_index != 0 also rebuild its index from the
 * log (the volume must not be open read-write elsewhere).  *errors counts
 * findings that make data unreadable, *notes harmless ones; *report (if not
 * NULL) gets one line per finding, "error: ..." or "note: ...", to release
 * with hlfs_string_free().  0, or -errno if the check could not run.
 */
int hlfs_check(const char *uri, int rebuild_index, uint64_t *errors,
               uint64_t *notes, char **report, char **errp);

/* Snapshots of the open volume (read-write handle needed except list). */
int hlfs_snapshot_create(hlfs_volume *vol, const char *name, char **errp);
/*
 * VM state (QEMU's savevm/loadvm).  hlfs_vmstate_write() writes the stream
 * being saved at `pos` (any alignment; a write at 0 starts a new stream and
 * drops one no snapshot claimed).  hlfs_snapshot_create_vm() then creates
 * the snapshot holding its first `vm_state_size` bytes (0: disk-only, and
 * the unclaimed stream is dropped), with the guest clock.
 * hlfs_vmstate_read() reads the state saved with snapshot `name` at `pos`;
 * past its end the buffers read as zeros.  0 or -errno.
 */
int hlfs_vmstate_write(hlfs_volume *vol, const struct iovec *iov, int iovcnt,
                       uint64_t pos, char **errp);
int hlfs_snapshot_create_vm(hlfs_volume *vol, const char *name,
                            uint64_t vm_state_size, uint64_t vm_clock_nsec,
                            char **errp);
int hlfs_vmstate_read(hlfs_volume *vol, const char *name,
                      const struct iovec *iov, int iovcnt, uint64_t pos,
                      char **errp);
int hlfs_snapshot_delete(hlfs_volume *vol, const char *name, char **errp);
int hlfs_snapshot_goto(hlfs_volume *vol, const char *name, char **errp);
/* Returns the number of snapshots (>= 0) and stores a malloc'd array in
 * *out, to be released with hlfs_snapshot_list_free(). */
int hlfs_snapshot_list(hlfs_volume *vol, hlfs_snapshot_info **out, char **errp);
void hlfs_snapshot_list_free(hlfs_snapshot_info *list, int count);

#ifdef __cplusplus
}
#endif

#endif /* HLFS_H */
