/*
 * Drives libhlfs through its C ABI exactly as QEMU's driver does: create,
 * open, I/O from several threads, flush, block status, snapshots, goto,
 * clone, read-only snapshot open, and error reporting through errp.
 * Property: every byte read back through the ABI equals what the C side
 * wrote or expects, and every failure returns a negative errno plus a message.
 */
#include "hlfs.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } } while (0)
#define OK(call) do { char *e_ = NULL; (void)e_; int r_ = (call); CHECK(r_ >= 0, "%s = %d", #call, r_); } while (0)

static char uri[512], snap_uri[600], clone_uri[600];
static hlfs_volume *vol;

static void fill(unsigned char *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed * 31 + i * 7 + (i >> 9));
}

static void *writer(void *arg) {
    unsigned t = (unsigned)(size_t)arg;
    unsigned char buf[65536], back[65536];
    for (int i = 0; i < 64; i++) {
        uint64_t off = ((uint64_t)t * 64 + i) * 65536;
        fill(buf, sizeof buf, t * 1000 + i);
        CHECK(hlfs_pwrite(vol, buf, sizeof buf, off) == 0, "pwrite");
        CHECK(hlfs_pread(vol, back, sizeof back, off) == 0, "pread");
        CHECK(memcmp(buf, back, sizeof buf) == 0, "thread %u iteration %d read back differs", t, i);
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2, "usage: abi_test DIR");
    snprintf(uri, sizeof uri, "hlfs:local://%s/vol", argv[1]);
    snprintf(snap_uri, sizeof snap_uri, "%s%%s1", uri);
    snprintf(clone_uri, sizeof clone_uri, "local://%s/clone", argv[1]);
    char *err = NULL;

    CHECK(hlfs_create(uri, 64 << 20, &err) == 0, "create: %s", err);
    CHECK(hlfs_create(uri, 64 << 20, &err) == -EEXIST && err && strstr(err, "already exists"), "create twice");
    hlfs_string_free(err); err = NULL;
    CHECK(hlfs_create("hdfs:local:///x", 1 << 20, &err) == -EINVAL && err, "bad uri");
    hlfs_string_free(err); err = NULL;

    CHECK(hlfs_open(uri, HLFS_OPEN_RDWR, &vol, &err) == 0, "open: %s", err);
    hlfs_volume *second = NULL;
    CHECK(hlfs_open(uri, HLFS_OPEN_RDWR, &second, &err) == -EAGAIN && strstr(err, "open read-write by pid"), "second writer");
    hlfs_string_free(err); err = NULL;

    pthread_t th[4];
    for (size_t t = 0; t < 4; t++) pthread_create(&th[t], NULL, writer, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    CHECK(hlfs_flush(vol) == 0, "flush");

    uint64_t len = 0, alloc = 0;
    OK(hlfs_get_length(vol, &len));
    CHECK(len == 64 << 20, "length %llu", (unsigned long long)len);
    OK(hlfs_get_allocated(vol, &alloc));
    CHECK(alloc >= 16 << 20, "allocated %llu", (unsigned long long)alloc);

    int allocated, is_zero; uint64_t pnum;
    OK(hlfs_block_status(vol, 0, 64 << 20, &allocated, &is_zero, &pnum));
    CHECK(allocated == 1 && is_zero == 0 && pnum == 16 << 20, "status of data: %d %d %llu", allocated, is_zero, (unsigned long long)pnum);
    OK(hlfs_block_status(vol, 16 << 20, 48 << 20, &allocated, &is_zero, &pnum));
    CHECK(allocated == 0 && is_zero == 1, "status of hole");

    /* Scatter-gather I/O as QEMU issues it: odd segment lengths, a request
     * starting mid-block, one crossing a record boundary (1 MiB + 512). */
    {
        static unsigned char src[(1 << 20) + 8192], dst[(1 << 20) + 8192];
        const size_t lens[] = {100, 4000, 512, 65536, 3, (1 << 20) - 70151 + 512};
        struct iovec wv[6], rv[6];
        size_t total = 0;
        for (int i = 0; i < 6; i++) total += lens[i];
        CHECK(total == (1 << 20) + 512, "iovec lengths add up to %zu", total);
        fill(src, total, 77);
        for (size_t i = 0, at = 0; i < 6; at += lens[i], i++) {
            wv[i].iov_base = src + at; wv[i].iov_len = lens[i];
            /* read back through a different split */
            rv[i].iov_base = dst + (total - at - lens[i]); rv[i].iov_len = lens[i];
        }
        uint64_t off = (40 << 20) + 1536;
        OK(hlfs_pwritev(vol, wv, 6, off));
        memset(dst, 0, sizeof dst);
        OK(hlfs_pread(vol, dst, total, off));
        CHECK(memcmp(src, dst, total) == 0, "pwritev then pread differs");
        /* preadv into the reversed split: segment i lands at the end */
        memset(dst, 0, sizeof dst);
        OK(hlfs_preadv(vol, rv, 6, off));
        for (size_t i = 0, at = 0; i < 6; at += lens[i], i++)
            CHECK(memcmp(src + at, dst + (total - at - lens[i]), lens[i]) == 0, "preadv segment %zu differs", i);
        /* the blocks around it are untouched (read-modify-write of edges) */
        unsigned char edge[512];
        OK(hlfs_pread(vol, edge, 512, off - 512));
        for (int i = 0; i < 512; i++) CHECK(edge[i] == 0, "byte before the pwritev changed");
        CHECK(hlfs_pwritev(vol, wv, -1, off) == -EINVAL, "negative iovcnt must fail");
        CHECK(hlfs_pwritev(vol, wv, 1, off) == -EINVAL, "100-byte pwritev must fail");
        OK(hlfs_pwritev(vol, wv, 0, off));

        /* hlfs_try_pwritev: done at once (0), or -EAGAIN and nothing
         * changed, so the blocking call must then do it. */
        struct iovec one = { .iov_base = src, .iov_len = 8192 };
        int r = hlfs_try_pwritev(vol, &one, 1, 8 << 20);
        CHECK(r == 0 || r == -EAGAIN, "hlfs_try_pwritev returned %d", r);
        if (r == -EAGAIN) OK(hlfs_pwritev(vol, &one, 1, 8 << 20));
        memset(dst, 0, 8192);
        OK(hlfs_pread(vol, dst, 8192, 8 << 20));
        CHECK(memcmp(src, dst, 8192) == 0, "try_pwritev then pread differs");
        /* not 4 KiB-aligned: always left to the blocking call */
        CHECK(hlfs_try_pwritev(vol, wv, 6, off) == -EAGAIN, "unaligned try_pwritev must say -EAGAIN");

        /* hlfs_try_preadv: the bytes (0), or -EAGAIN and then the blocking
         * read; never another error, even for a bad request. */
        struct iovec rd = { .iov_base = dst, .iov_len = 8192 };
        memset(dst, 0, 8192);
        r = hlfs_try_preadv(vol, &rd, 1, 8 << 20);
        CHECK(r == 0 || r == -EAGAIN, "hlfs_try_preadv returned %d", r);
        if (r == -EAGAIN) OK(hlfs_preadv(vol, &rd, 1, 8 << 20));
        CHECK(memcmp(src, dst, 8192) == 0, "try_preadv differs from what was written");
        CHECK(hlfs_try_preadv(vol, &rd, 1, 1ULL << 40) == -EAGAIN, "try_preadv past the end must say -EAGAIN");
    }

    unsigned char a[4096], b[4096];
    CHECK(hlfs_pread(vol, a, 100, 0) == -EINVAL, "unaligned read must fail");
    CHECK(hlfs_pread(vol, a, 4096, 64 << 20) == -EINVAL, "read past end must fail");

    CHECK(hlfs_snapshot_create(vol, "s1", &err) == 0, "snapshot: %s", err);
    CHECK(hlfs_snapshot_create(vol, "bad/name", &err) == -EINVAL && err, "bad name");
    hlfs_string_free(err); err = NULL;
    memset(a, 0xAB, sizeof a);
    OK(hlfs_pwrite(vol, a, 4096, 0));
    OK(hlfs_write_zeroes(vol, 65536, 65536));
    OK(hlfs_pread(vol, b, 4096, 65536));
    for (int i = 0; i < 4096; i++) CHECK(b[i] == 0, "zeroed range must read zero");

    hlfs_snapshot_info *list = NULL;
    int n = hlfs_snapshot_list(vol, &list, &err);
    CHECK(n == 1 && strcmp(list[0].name, "s1") == 0 && list[0].virtual_size == 64 << 20, "list");
    hlfs_snapshot_list_free(list, n);

    /* Read-only view of the snapshot while the writer is open. */
    hlfs_volume *ro = NULL;
    CHECK(hlfs_open(snap_uri, HLFS_OPEN_RDONLY, &ro, &err) == 0, "open snap: %s", err);
    unsigned char expect[65536], got[65536];
    fill(expect, sizeof expect, 0);
    OK(hlfs_pread(ro, got, sizeof got, 0));
    CHECK(memcmp(expect, got, sizeof got) == 0, "snapshot must keep the old data");
    CHECK(hlfs_pwrite(ro, got, 4096, 0) == -EROFS, "write to read-only");
    hlfs_close(ro);

    CHECK(hlfs_clone(snap_uri, clone_uri, 0, &err) == 0, "clone: %s", err);
    CHECK(hlfs_snapshot_delete(vol, "s1", &err) == -EBUSY && strstr(err, "clone"), "delete snapshot with clone");
    hlfs_string_free(err); err = NULL;
    hlfs_volume *cl = NULL;
    CHECK(hlfs_open(clone_uri, HLFS_OPEN_RDWR, &cl, &err) == 0, "open clone: %s", err);
    OK(hlfs_pread(cl, got, sizeof got, 0));
    CHECK(memcmp(expect, got, sizeof got) == 0, "clone reads its base snapshot");
    hlfs_close(cl);

    CHECK(hlfs_snapshot_goto(vol, "s1", &err) == 0, "goto: %s", err);
    OK(hlfs_pread(vol, got, sizeof got, 0));
    CHECK(memcmp(expect, got, sizeof got) == 0, "goto restores the snapshot");
    CHECK(hlfs_truncate(vol, 128 << 20, &err) == 0, "grow");
    CHECK(hlfs_truncate(vol, 1 << 20, &err) == -ENOTSUP && err, "shrink refused");
    hlfs_string_free(err); err = NULL;
    hlfs_close(vol);

    /* hlfs_open_opts: the tunables reach the engine (the index goes to
     * index-dir/<uuid>, not the volume's index/), and a bad key or value
     * fails with -EINVAL and a message naming the key. */
    {
        char idx[600], own[600], fresh[600];
        snprintf(idx, sizeof idx, "%s/idx", argv[1]);
        snprintf(own, sizeof own, "%s/fresh/index", argv[1]);
        snprintf(fresh, sizeof fresh, "local://%s/fresh", argv[1]);
        hlfs_volume *tv = NULL;
        const char *keys[] = {"index-dir", "cleaner", "cleaner-ratio", "cleaner-min-dead",
                              "cleaner-rate", "cleaner-interval", "hdfs-timeout", "map-memory"};
        const char *vals[] = {idx, "on", "2.5", "64M", "1048576", "0.5", "3", "16M"};
        CHECK(hlfs_create(fresh, 16 << 20, &err) == 0, "create fresh: %s", err);
        CHECK(hlfs_open_opts(fresh, HLFS_OPEN_RDWR, keys, vals, 8, &tv, &err) == 0,
              "open_opts: %s", err);
        OK(hlfs_pwrite(tv, expect, 4096, 0));
        hlfs_close(tv);
        struct stat st;
        int subdirs = 0;
        DIR *d = opendir(idx);
        CHECK(d != NULL, "index-dir %s was not created", idx);
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') subdirs++;
        closedir(d);
        CHECK(subdirs == 1, "%d entries in index-dir %s, expected the volume's <uuid>", subdirs, idx);
        CHECK(stat(own, &st) != 0 && errno == ENOENT, "%s exists although index-dir was given", own);

        const char *bk[] = {"cleaner-ratio"}, *bv[] = {"0.5"};
        CHECK(hlfs_open_opts(fresh, HLFS_OPEN_RDWR, bk, bv, 1, &tv, &err) == -EINVAL &&
              err && strstr(err, "cleaner-ratio") && strstr(err, "0.5"), "bad ratio: %s", err ? err : "");
        hlfs_string_free(err); err = NULL;
        const char *uk[] = {"cleaner-budget"}, *uv[] = {"1"};
        CHECK(hlfs_open_opts(fresh, HLFS_OPEN_RDONLY, uk, uv, 1, &tv, &err) == -EINVAL &&
              err && strstr(err, "cleaner-budget") && strstr(err, "index-dir"), "unknown key: %s", err ? err : "");
        hlfs_string_free(err); err = NULL;
        const char *rk[] = {"index-dir"}, *rv[] = {"relative/dir"};
        CHECK(hlfs_open_opts(fresh, HLFS_OPEN_RDWR, rk, rv, 1, &tv, &err) == -EINVAL &&
              err && strstr(err, "index-dir"), "relative index-dir: %s", err ? err : "");
        hlfs_string_free(err); err = NULL;
        CHECK(hlfs_open_opts(fresh, HLFS_OPEN_RDONLY, NULL, NULL, 0, &tv, &err) == 0,
              "open_opts without options: %s", err);
        hlfs_close(tv);
    }
    printf("abi_test: ok (%s)\n", hlfs_version());
    return 0;
}
