//! Whole-path tests of the built `hlfs`, `snapshot.hlfs` and `clone.hlfs`
//! binaries against real local volumes in temporary directories.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const HLFS: &str = env!("CARGO_BIN_EXE_hlfs");
const MIB: usize = 1 << 20;
const BS: usize = 4096;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn uri(&self, name: &str) -> String {
        format!("local://{}/{name}", self.dir.path().display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_raw(&self, name: &str, data: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).env_remove("RUST_LOG").output().expect("binary runs")
}

/// Runs `hlfs ARGS` with `input` piped to its stdin (from another thread,
/// so a full pipe cannot deadlock) and stdout and stderr captured.
fn run_piped(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(HLFS)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The command may fail before reading everything; a broken pipe here is fine.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// `hlfs export URI -`: asserts success and a quiet stderr, returns stdout.
fn export_stdout(uri: &str) -> Vec<u8> {
    let out = run_piped(&["export", uri, "-"], b"");
    assert!(out.status.success(), "export {uri} -: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Runs `hlfs ARGS`, asserts success and returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(HLFS, args);
    assert!(
        out.status.success(),
        "hlfs {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `hlfs ARGS`, expects it to fail, returns (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let out = run(HLFS, args);
    assert!(!out.status.success(), "hlfs {args:?} unexpectedly succeeded");
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Deterministic pseudo-random bytes with all-zero 4 KiB holes: every
/// block whose index has `(i * 7 + seed) % 5 == 0` stays zero.
fn raw_with_holes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    for (i, block) in v.chunks_mut(BS).enumerate() {
        if (i as u64 * 7 + seed) % 5 == 0 {
            continue;
        }
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
    }
    v
}

fn nonzero_blocks(data: &[u8]) -> usize {
    data.chunks(BS).filter(|b| b.iter().any(|&x| x != 0)).count()
}

/// Exports `uri` to a file and returns its bytes.
fn export(env: &Env, uri: &str, file: &str) -> Vec<u8> {
    let p = env.path(file);
    ok(&["export", uri, p.to_str().unwrap()]);
    std::fs::read(&p).unwrap()
}

/// `len` bytes: `layers` copied in order from offset 0, zeros after them.
fn expected(len: usize, layers: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for l in layers {
        v[..l.len()].copy_from_slice(l);
    }
    v
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn largest_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn import_snapshot_overwrite_export_round_trip() {
    // Property: export returns byte for byte what was imported, both at the
    // head and at a snapshot taken before a second import overwrote part of
    // it (zero blocks of the second image included, and an image length that
    // is not a multiple of 512 leaves the bytes after it untouched).
    let env = Env::new();
    let v = env.uri("v");
    let size = 8 * MIB;
    ok(&["create", &v, "8M"]);
    let a = raw_with_holes(3 * MIB + 5 * BS, 1);
    let b = raw_with_holes(MIB + 700, 2);
    let ra = env.write_raw("a.raw", &a);
    let rb = env.write_raw("b.raw", &b);
    ok(&["import", &ra, &v]);
    ok(&["snapshot", "create", &v, "s1"]);
    ok(&["import", "-n", &rb, &v]);
    assert!(export(&env, &format!("{v}%s1"), "s1.out") == expected(size, &[&a]), "snapshot s1 differs");
    assert!(export(&env, &v, "head.out") == expected(size, &[&a, &b]), "head differs");
}

#[test]
fn import_into_fresh_volume_stores_only_nonzero_blocks() {
    // Property: importing into a never-written volume stores exactly the
    // image's non-zero 4 KiB blocks (live bytes), and import creates a
    // missing volume sized to the image rounded up to 512 bytes.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(2 * MIB + 1000, 3);
    let ra = env.write_raw("a.raw", &a);
    ok(&["import", &ra, &v]);
    let info = json(&ok(&["info", "--output", "json", &v]));
    assert_eq!(info["virtual_size"], (a.len().div_ceil(512) * 512) as u64);
    let live = info["live_bytes"].as_u64().unwrap() as usize;
    assert_eq!(live, nonzero_blocks(&a) * BS);
    assert!(live < a.len());
    assert_eq!(export(&env, &v, "out"), expected(a.len().div_ceil(512) * 512, &[&a]));
}

#[test]
fn import_refuses_missing_volume_with_no_create_and_too_small_volume() {
    // Property: -n does not create (exit 3), and an image larger than the
    // volume is a usage error (exit 2) naming `hlfs resize`.
    let env = Env::new();
    let v = env.uri("v");
    let ra = env.write_raw("a.raw", &raw_with_holes(2 * MIB, 4));
    assert_eq!(fails(&["import", "-n", &ra, &v]).0, 3);
    ok(&["create", &v, "1M"]);
    let (code, err) = fails(&["import", &ra, &v]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("hlfs resize"), "{err}");
}

#[test]
fn clone_reads_base_then_diverges() {
    // Property: a clone exports as its base snapshot until written; writes
    // to the clone change only the clone; the base lists the clone and
    // refuses to delete the snapshot while the clone exists (exit 6).
    let env = Env::new();
    let (base, child) = (env.uri("base"), env.uri("child"));
    ok(&["create", &base, "4M"]);
    let a = raw_with_holes(3 * MIB, 5);
    let c = raw_with_holes(MIB / 2, 6);
    ok(&["import", &env.write_raw("a.raw", &a), &base]);
    ok(&["snapshot", "create", &base, "gold"]);
    ok(&["clone", &format!("{base}%gold"), &child, "--size", "6M"]);
    assert_eq!(export(&env, &child, "c0"), expected(6 * MIB, &[&a]));
    ok(&["import", "-n", &env.write_raw("c.raw", &c), &child]);
    assert_eq!(export(&env, &child, "c1"), expected(6 * MIB, &[&a, &c]));
    assert_eq!(export(&env, &base, "b1"), expected(4 * MIB, &[&a]));

    let list = json(&ok(&["snapshot", "list", "--output", "json", &base]));
    assert_eq!(list[0]["name"], "gold");
    assert_eq!(list[0]["clones"][0], child.as_str());
    let (code, err) = fails(&["snapshot", "delete", &base, "gold"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.starts_with("hlfs: error: ") && err.contains(&child), "{err}");
    assert_eq!(fails(&["delete", &base]).0, 6);
    ok(&["delete", &child]);
    ok(&["snapshot", "delete", &base, "gold"]);
}

#[test]
fn info_json_has_documented_fields() {
    // Property: `info --output json` is valid JSON with every documented
    // field, of the right type and value.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "1G"]);
    ok(&["snapshot", "create", &v, "first"]);
    let i = json(&ok(&["info", "--output", "json", &v]));
    assert_eq!(i["uri"], v.as_str());
    assert_eq!(i["backend"], "local");
    assert_eq!(i["uuid"].as_str().unwrap().len(), 32);
    assert_eq!(i["virtual_size"], 1u64 << 30);
    assert_eq!(i["block_size"], 4096);
    for k in ["allocated_bytes", "live_bytes", "head_bytes", "segments", "created_sec"] {
        assert!(i[k].is_u64(), "{k}: {}", i[k]);
    }
    assert!(i["allocated_bytes"].as_u64().unwrap() > 0);
    assert!(i["base"].is_null() && i["writer"].is_null());
    let created = i["created"].as_str().unwrap();
    assert_eq!(created.len(), "YYYY-MM-DD HH:MM:SS".len(), "{created}");
    let s = &i["snapshots"][0];
    assert_eq!(s["name"], "first");
    assert_eq!(s["virtual_size"], 1u64 << 30);
    assert_eq!(s["bytes"], 0);
    assert!(s["id"].is_u64() && s["date_sec"].is_u64() && s["date_nsec"].is_u64());
    assert_eq!(s["date"].as_str().unwrap().len(), 19);
    assert!(s["clones"].as_array().unwrap().is_empty());
    // The human form shows the same snapshot with a UTC date.
    let human = ok(&["snapshot", "list", &v]);
    assert!(human.contains("first") && human.contains(s["date"].as_str().unwrap()), "{human}");
}

#[test]
fn exit_codes_name_the_failure() {
    // Property: bad URI/size/option → 2, missing volume or snapshot → 3,
    // existing volume or snapshot → 7; each error is one stderr line, and the
    // seed's `%shopshot1` typo lists the snapshots that do exist.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "16M"]);
    ok(&["snapshot", "create", &v, "snapshot1"]);
    let (code, err) = fails(&["info", "hdfs:local:///tmp/testenv/testfs"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("hlfs: error: "), "{err}");
    assert_eq!(fails(&["create", &env.uri("w"), "ten"]).0, 2);
    assert_eq!(fails(&["create", &env.uri("w"), "1000"]).0, 2);
    assert_eq!(fails(&["info", "--output", "yaml", &v]).0, 2);
    assert_eq!(fails(&["frobnicate"]).0, 2);
    assert_eq!(fails(&["snapshot", "create", &format!("{v}%snapshot1"), "x"]).0, 2);
    assert_eq!(fails(&["info", &env.uri("missing")]).0, 3);
    let (code, err) = fails(&["export", &format!("{v}%shopshot1"), env.path("o").to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("shopshot1") && err.contains("snapshot1"), "{err}");
    assert_eq!(fails(&["snapshot", "delete", &v, "nope"]).0, 3);
    assert_eq!(fails(&["create", &v, "1G"]).0, 7);
    assert_eq!(fails(&["snapshot", "create", &v, "snapshot1"]).0, 7);
}

#[test]
fn writer_lock_gives_exit_4_and_is_reported() {
    // Property: while another process holds the volume read-write, commands
    // that write exit 4, and `info` still works and names the holder.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "16M"]);
    let held = hlfs::Volume::open(&v, &hlfs::OpenOptions::default()).unwrap();
    let (code, err) = fails(&["snapshot", "create", &v, "s"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert_eq!(fails(&["resize", &v, "+1M"]).0, 4);
    let info = json(&ok(&["info", "--output", "json", &v]));
    assert!(info["writer"].as_str().unwrap().contains(&format!("pid {}", std::process::id())));
    held.close().unwrap();
    ok(&["snapshot", "create", &v, "s"]);
}

#[test]
fn stale_lock_is_taken_over_with_a_visible_warning() {
    // Property: a lock left by a process that is gone does not block a
    // command, and at the default log level stderr says so in one
    // `hlfs: warning:` line while stdout stays empty.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "1M"]);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(env.path("v").join("lock"), format!("pid={dead}\nhost={}\nstart=1\n", host.trim())).unwrap();
    let out = run(HLFS, &["snapshot", "create", &v, "s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("hlfs: warning: ") && err.contains("stale lock"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn lock_from_another_host_needs_unlock() {
    // Property: a lock held from another host is never taken over; the
    // refusal (exit 4) names the holder and `hlfs unlock`, which removes it
    // and says whose it was; a holder alive on this host is refused (exit 4)
    // and its lock stays.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "1M"]);
    let lock = env.path("v").join("lock");
    std::fs::write(&lock, "pid=4242\nhost=hlfs-test-other-host\nstart=7\n").unwrap();
    let (code, err) = fails(&["snapshot", "create", &v, "s"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("hlfs-test-other-host") && err.contains(&format!("hlfs unlock {v}")), "{err}");
    let out = ok(&["unlock", &v]);
    assert!(out.contains("pid 4242 on host hlfs-test-other-host"), "{out}");
    assert!(!lock.exists());
    ok(&["snapshot", "create", &v, "s"]);
    assert!(ok(&["unlock", &v]).contains("no write lock"));

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(&lock, format!("pid={}\nhost={}\nstart=0\n", std::process::id(), host.trim())).unwrap();
    let (code, err) = fails(&["unlock", &v]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("alive"), "{err}");
    assert!(lock.exists(), "a live holder keeps its lock");
    std::fs::remove_file(&lock).unwrap();
}

#[test]
fn unreachable_hdfs_namenode_fails_within_the_deadline() {
    // Property: an HDFS NameNode that refuses connections makes a command
    // fail (exit 1) within HLFS_HDFS_TIMEOUT, naming the address.
    let t = std::time::Instant::now();
    let out = Command::new(HLFS)
        .args(["info", "hlfs:hdfs://127.0.0.1:1/x/vol"])
        .env("HLFS_HDFS_TIMEOUT", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:1") && err.contains("unreachable"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(8), "took {:?}", t.elapsed());
}

#[test]
fn resize_grows_by_absolute_or_relative_size() {
    // Property: `resize URI SIZE` and `resize URI +SIZE` set the virtual
    // size; shrinking fails (exit 1) and leaves the size alone.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "1M"]);
    ok(&["resize", &v, "3M"]);
    ok(&["resize", &v, "+512K"]);
    let size = |v: &str| json(&ok(&["info", "--output", "json", v]))["virtual_size"].as_u64().unwrap();
    assert_eq!(size(&v), (3 << 20) + (512 << 10));
    assert_eq!(fails(&["resize", &v, "1M"]).0, 1);
    assert_eq!(fails(&["resize", &v, "-1M"]).0, 1);
    assert_eq!(size(&v), (3 << 20) + (512 << 10));
}

#[test]
fn revert_restores_snapshot_and_keeps_previous_head() {
    // Property: after `snapshot revert`, the head reads as the snapshot, and
    // the replaced contents survive as a pre-revert snapshot that is named on
    // stderr.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(MIB, 7);
    let b = raw_with_holes(MIB, 8);
    ok(&["create", &v, "2M"]);
    ok(&["import", "-n", &env.write_raw("a.raw", &a), &v]);
    ok(&["snapshot", "create", &v, "s1"]);
    ok(&["import", "-n", &env.write_raw("b.raw", &b), &v]);
    let out = run(HLFS, &["snapshot", "revert", &v, "s1"]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    let kept = note.split('"').nth(1).unwrap_or_else(|| panic!("no snapshot named in {note:?}"));
    assert!(kept.starts_with("pre-revert"), "{note}");
    assert_eq!(export(&env, &v, "head"), expected(2 * MIB, &[&a]));
    assert_eq!(export(&env, &format!("{v}%{kept}"), "kept"), expected(2 * MIB, &[&b]));
}

#[test]
fn fsck_rebuild_index_keeps_data_and_flags_corruption() {
    // Property: `fsck --rebuild-index` reports a clean log, rebuilds the
    // index, and the volume exports the same bytes afterwards; flipping a
    // stored data byte makes fsck exit 5 and reading that block exit 5.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(MIB, 9);
    ok(&["import", &env.write_raw("a.raw", &a), &v]);
    // A metadata operation starts a new segment, so the data segment is not the log's tail.
    ok(&["snapshot", "create", &v, "s1"]);
    let before = export(&env, &v, "before");
    let rep = json(&ok(&["fsck", "--rebuild-index", "--output", "json", &v]));
    assert_eq!(rep["clean"], true);
    assert_eq!(rep["rebuilt_index"], true);
    assert!(rep["errors"].as_array().unwrap().is_empty());
    assert_eq!(rep["data_blocks"].as_u64().unwrap() as usize, nonzero_blocks(&a));
    assert_eq!(export(&env, &v, "after"), before);

    let seg = largest_segment(&env.path("v"));
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = run(HLFS, &["fsck", "--output", "json", &v]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let rep = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rep["clean"], false);
    assert!(!rep["errors"].as_array().unwrap().is_empty());
    assert_eq!(fails(&["export", &v, env.path("bad").to_str().unwrap()]).0, 5);
}

#[test]
fn export_is_sparse() {
    // Property: exporting a mostly empty volume writes a file of the full
    // virtual size whose allocated blocks cover little more than the data.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(MIB, 10);
    ok(&["create", &v, "64M"]);
    ok(&["import", "-n", &env.write_raw("a.raw", &a), &v]);
    let out = env.path("sparse.raw");
    ok(&["export", &v, out.to_str().unwrap()]);
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    let allocated = meta.blocks() * 512;
    assert!(allocated <= 2 << 20, "export allocated {allocated} bytes for 1 MiB of data");
    assert_eq!(std::fs::read(&out).unwrap(), expected(64 * MIB, &[&a]));
}

#[test]
fn seed_tools_snapshot_and_clone() {
    // Property: the seed guide's commands work as written:
    // `snapshot.hlfs -u URI -s NAME` takes a snapshot, `-l` lists it,
    // `clone.hlfs -f URI%NAME -s URI2` clones into a created, never-written
    // volume that then reads as the snapshot, and the `%shopshot1` typo fails
    // with exit 3 naming the snapshot that exists.
    let env = Env::new();
    // The tools are installed under the seed's dotted names; run them so.
    let snap_tool = env.path("snapshot.hlfs");
    let clone_tool = env.path("clone.hlfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_snapshot_hlfs"), &snap_tool).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_clone_hlfs"), &clone_tool).unwrap();
    let (snap_tool, clone_tool) = (snap_tool.to_str().unwrap(), clone_tool.to_str().unwrap());
    let (fs1, fs2) = (env.uri("testfs"), env.uri("testfs2"));
    let a = raw_with_holes(MIB, 11);
    ok(&["create", &fs1, "10M"]);
    ok(&["import", "-n", &env.write_raw("a.raw", &a), &fs1]);

    let out = run(snap_tool, &["-u", &fs1, "-s", "snapshot1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(snap_tool, &["-u", &fs1, "-l"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("snapshot1"));

    let out = run(clone_tool, &["-f", &format!("{fs1}%shopshot1"), "-s", &fs2]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("clone.hlfs: error: ") && err.contains("it has: snapshot1"), "{err}");

    ok(&["create", &fs2, "10M"]);
    let out = run(clone_tool, &["-f", &format!("hlfs:{fs1}%snapshot1"), "-s", &fs2]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(export(&env, &fs2, "fs2.raw"), expected(10 * MIB, &[&a]));
    assert_eq!(json(&ok(&["info", "--output", "json", &fs2]))["base"], format!("{fs1}%snapshot1"));

    let out = run(snap_tool, &["-u", &fs1, "-d", "snapshot1"]);
    assert_eq!(out.status.code(), Some(6), "a snapshot with a clone cannot be deleted");
    let out = run(snap_tool, &["-u", &fs1]);
    assert_eq!(out.status.code(), Some(2), "no action is a usage error");
}

#[test]
fn every_command_has_help() {
    // Property: every command and subcommand answers --help with a
    // description, and the top-level help documents the exit codes.
    let top = ok(&["--help"]);
    assert!(top.contains("Exit codes:") && top.contains("4  locked"), "{top}");
    for cmd in [
        &["create"][..],
        &["info"],
        &["delete"],
        &["resize"],
        &["snapshot"],
        &["snapshot", "create"],
        &["snapshot", "list"],
        &["snapshot", "delete"],
        &["snapshot", "revert"],
        &["clone"],
        &["import"],
        &["export"],
        &["fsck"],
        &["list"],
        &["wipe"],
        &["unlock"],
        &["du"],
        &["flatten"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let h = ok(&args);
        assert!(h.lines().next().is_some_and(|l| l.len() > 10), "{cmd:?}: {h}");
    }
    assert!(ok(&["info", "--help"]).contains("live_bytes"));
    assert!(ok(&["list", "--help"]).contains("allocated_bytes"));
    assert!(ok(&["du", "--help"]).contains("exclusive_bytes"));
    assert!(ok(&["flatten", "--help"]).contains("blocks_copied"));
    assert!(ok(&["import", "--help"]).contains("stdin"));
    assert!(ok(&["export", "--help"]).contains("stdout"));
    for bin in [env!("CARGO_BIN_EXE_snapshot_hlfs"), env!("CARGO_BIN_EXE_clone_hlfs")] {
        let out = run(bin, &["--help"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes:"));
    }
}

#[test]
fn delete_removes_the_volume() {
    // Property: after `delete`, the volume is gone (info exits 3) and its
    // name can be created again.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "1M"]);
    ok(&["delete", &v]);
    assert_eq!(fails(&["info", &v]).0, 3);
    assert!(!env.path("v").exists());
    ok(&["create", &v, "1M"]);
}

#[test]
fn list_reports_volumes_and_skips_other_entries() {
    // Property: `list --output json` names the directory canonically, gives
    // the filesystem's capacity and free space, and lists exactly the
    // volumes (sorted, with size, allocation and base), skipping a plain
    // sub-directory and a file; a volume held read-write (and written) by
    // another process is still listed; the human form shows the same names.
    let env = Env::new();
    let pool = env.uri("pool");
    let (a, b, c) = (env.uri("pool/a"), env.uri("pool/b"), env.uri("pool/c"));
    ok(&["create", &b, "2M"]);
    ok(&["create", &a, "1M"]);
    let data = raw_with_holes(MIB, 21);
    ok(&["import", "-n", &env.write_raw("d.raw", &data), &b]);
    ok(&["snapshot", "create", &b, "gold"]);
    ok(&["clone", &format!("{b}%gold"), &c, "--size", "3M"]);
    std::fs::create_dir(env.path("pool/not-a-volume")).unwrap();
    std::fs::write(env.path("pool/notes.txt"), b"hello").unwrap();
    let held = hlfs::Volume::open(&a, &hlfs::OpenOptions::default()).unwrap();
    held.write(0, &[7u8; BS]).unwrap();
    held.flush().unwrap();

    let l = json(&ok(&["list", "--output", "json", &format!("hlfs:{pool}/")]));
    assert_eq!(l["uri"], pool.as_str());
    assert_eq!(l["backend"], "local");
    let (cap, avail) = (l["capacity"].as_u64().unwrap(), l["available"].as_u64().unwrap());
    assert!(cap > 0 && avail <= cap, "capacity {cap}, available {avail}");
    let vols = l["volumes"].as_array().unwrap();
    let names: Vec<&str> = vols.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for (v, (uri, size)) in vols.iter().zip([(&a, MIB), (&b, 2 * MIB), (&c, 3 * MIB)]) {
        assert_eq!(v["uri"], uri.as_str());
        assert_eq!(v["virtual_size"], size as u64);
        let info = json(&ok(&["info", "--output", "json", uri]));
        assert_eq!(v["allocated_bytes"], info["allocated_bytes"], "{uri}");
    }
    assert!(vols[1]["allocated_bytes"].as_u64().unwrap() >= (nonzero_blocks(&data) * BS) as u64);
    assert!(vols[0]["base"].is_null() && vols[1]["base"].is_null());
    assert_eq!(vols[2]["base"], format!("{b}%gold"));

    let human = ok(&["list", &pool]);
    assert!(human.starts_with(&format!("{pool}: 3 volume(s)")), "{human}");
    assert!(!human.contains("not-a-volume") && !human.contains("notes.txt"), "{human}");
    held.close().unwrap();

    let empty = json(&ok(&["list", "--output", "json", &env.uri("pool/not-a-volume")]));
    assert!(empty["volumes"].as_array().unwrap().is_empty());
}

#[test]
fn list_of_missing_dir_or_snapshot_uri_fails() {
    // Property: a directory that does not exist exits 3 naming it; a
    // directory URI with %snapshot is a usage error (exit 2).
    let env = Env::new();
    let missing = env.uri("nope");
    let (code, err) = fails(&["list", &missing]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&missing), "{err}");
    std::fs::create_dir(env.path("pool")).unwrap();
    assert_eq!(fails(&["list", &format!("{}%s", env.uri("pool"))]).0, 2);
}

#[test]
fn mkdir_and_rmdir_make_and_remove_empty_directories() {
    // Property: `mkdir` makes a directory with its parents (again: no
    // error) that `list` then shows empty; `rmdir` refuses one that holds a
    // volume (exit 6, naming it and leaving it) and removes it once the
    // volume is deleted; a missing directory exits 3, a %snapshot URI 2.
    let env = Env::new();
    let dir = env.uri("a/b/pool");
    ok(&["mkdir", &dir]);
    ok(&["mkdir", &format!("hlfs:{dir}")]);
    assert!(env.path("a/b/pool").is_dir());
    let l = json(&ok(&["list", "--output", "json", &dir]));
    assert!(l["volumes"].as_array().unwrap().is_empty());
    let v = env.uri("a/b/pool/v");
    ok(&["create", &v, "1M"]);
    let (code, err) = fails(&["rmdir", &dir]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains(&dir) && err.contains("not empty"), "{err}");
    assert!(env.path("a/b/pool/v").is_dir());
    ok(&["delete", &v]);
    ok(&["rmdir", &dir]);
    assert!(!env.path("a/b/pool").exists() && env.path("a/b").is_dir());
    let (code, err) = fails(&["rmdir", &dir]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(fails(&["mkdir", &format!("{dir}%s")]).0, 2);
}

#[test]
fn stdin_import_and_stdout_export_round_trip() {
    // Property: an image piped to `import - --size` comes back byte for byte
    // from `export -`, which writes exactly the virtual size to stdout (zero
    // holes included) and nothing else; a second `import -n -` over it
    // changes only the bytes that arrived (zero blocks over old data become
    // zeros, the rest of a partial last sector keeps the old bytes), and
    // stdout export agrees with the sparse file export.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(3 * MIB + 3 * BS, 31);
    let out = run_piped(&["import", "-", &v, "--size", "5M"], &a);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let got = export_stdout(&v);
    assert_eq!(got.len(), 5 * MIB);
    assert!(got == expected(5 * MIB, &[&a]), "stdout export differs from the imported image");
    let info = json(&ok(&["info", "--output", "json", &v]));
    assert_eq!(info["live_bytes"].as_u64().unwrap() as usize, nonzero_blocks(&a) * BS);

    let b = raw_with_holes(2 * MIB + 300, 32);
    let out = run_piped(&["import", "-n", "-", &v], &b);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = expected(5 * MIB, &[&a, &b]);
    assert!(export_stdout(&v) == want, "stdout export after import -n differs");
    assert!(export(&env, &v, "file.out") == want, "file export differs");
}

#[test]
fn stdin_import_needs_size_to_create_and_room_to_fit() {
    // Property: `import -` of a missing volume without --size fails with a
    // usage error naming --size and creates nothing; an image longer than
    // the volume fails with exit 2 after filling the volume.
    let env = Env::new();
    let v = env.uri("v");
    let data = raw_with_holes(MIB, 33);
    let out = run_piped(&["import", "-", &v], &data);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("hlfs: error: ") && err.contains("--size"), "{err}");
    assert_eq!(fails(&["info", &v]).0, 3, "a failed import - left a volume behind");

    let out = run_piped(&["import", "-", &v, "--size", "512K"], &data);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than the volume"));
    assert_eq!(export_stdout(&v), data[..512 << 10]);
}

#[test]
fn wipe_zeroes_exactly_the_range_without_writing_data() {
    // Property: `wipe --offset --length` makes exactly that range read as
    // zeros (ends inside 4 KiB blocks included) and leaves the rest and the
    // snapshots alone; a whole-volume wipe reads all zeros and adds only
    // metadata to the log (a record and the checkpoint written on close),
    // far less than the volume's 4 MiB.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(4 * MIB, 41);
    ok(&["import", &env.write_raw("a.raw", &a), &v]);
    ok(&["snapshot", "create", &v, "s"]);
    let (off, len) = (MIB + 512, 64 * 1024 + 1024);
    ok(&["wipe", &v, "--offset", &off.to_string(), "--length", &len.to_string()]);
    let mut want = a.clone();
    want[off..off + len].fill(0);
    assert!(export_stdout(&v) == want, "partial wipe changed the wrong bytes");
    ok(&["wipe", &v, "--offset", "3M"]);
    want[3 * MIB..].fill(0);
    assert!(export_stdout(&v) == want, "wipe to the end changed the wrong bytes");

    let alloc = |v: &str| json(&ok(&["info", "--output", "json", v]))["allocated_bytes"].as_u64().unwrap();
    let before = alloc(&v);
    ok(&["wipe", &v]);
    assert!(export_stdout(&v).iter().all(|&x| x == 0), "whole wipe left data");
    let grown = alloc(&v) - before;
    assert!(grown < 256 * 1024, "whole wipe added {grown} log bytes");
    assert!(export_stdout(&format!("{v}%s")) == a, "wipe changed the snapshot");
}

#[test]
fn wipe_refuses_unaligned_or_out_of_range() {
    // Property: offsets or lengths that are not multiples of 512, ranges
    // past the end and snapshot URIs are usage errors (exit 2) that change
    // nothing.
    let env = Env::new();
    let v = env.uri("v");
    let a = raw_with_holes(MIB, 42);
    ok(&["import", &env.write_raw("a.raw", &a), &v]);
    ok(&["snapshot", "create", &v, "s"]);
    for args in [
        &["--offset", "1000"][..],
        &["--length", "100"],
        &["--offset", "512", "--length", "1M"],
        &["--offset", "2M"],
    ] {
        let mut cmd = vec!["wipe", v.as_str()];
        cmd.extend_from_slice(args);
        let (code, err) = fails(&cmd);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    assert_eq!(fails(&["wipe", &format!("{v}%s")]).0, 2);
    assert!(export_stdout(&v) == a, "a refused wipe changed data");
}

#[test]
fn du_shows_exclusive_and_shared_bytes_that_add_up() {
    // Property: after a snapshot and a partial overwrite, the snapshot holds
    // exclusively the overwritten blocks' old versions, the head its new
    // ones, both share the rest; exclusive + shared + unread = live bytes.
    let env = Env::new();
    let v = env.uri("v");
    ok(&["create", &v, "4M"]);
    let a = raw_with_holes(2 * MIB, 3);
    ok(&["import", &env.write_raw("a.raw", &a), &v]);
    ok(&["snapshot", "create", &v, "s1"]);
    let b = raw_with_holes(MIB / 2, 4);
    ok(&["import", "-n", &env.write_raw("b.raw", &b), &v]);
    let d = json(&ok(&["du", "--output", "json", &v]));
    let views = d["views"].as_array().unwrap();
    assert_eq!(views.len(), 2, "{d}");
    assert_eq!(views[0]["name"], "s1");
    assert!(views[1]["name"].is_null(), "the head comes last: {d}");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {v}"));
    let (a_blocks, b_blocks) = (nonzero_blocks(&a) as u64, nonzero_blocks(&b) as u64);
    // Import overwrites all of the first 512 KiB (b's zero blocks become
    // zero entries where a had data): s1 alone reads a's data there.
    let overwritten = nonzero_blocks(&a[..MIB / 2]) as u64;
    assert_eq!(n(&views[0], "exclusive_bytes"), overwritten * BS as u64, "{d}");
    assert_eq!(n(&views[1], "exclusive_bytes"), b_blocks * BS as u64, "{d}");
    assert_eq!(n(&views[0], "shared_bytes"), (a_blocks - overwritten) * BS as u64, "{d}");
    assert_eq!(n(&views[1], "shared_bytes"), n(&views[0], "shared_bytes"), "{d}");
    assert_eq!(n(&d, "exclusive_bytes") + n(&d, "shared_bytes") + n(&d, "unread_bytes"), n(&d, "live_bytes"), "{d}");
    let info = json(&ok(&["info", "--output", "json", &v]));
    assert_eq!(info["live_bytes"], d["live_bytes"]);
    assert!(n(&d, "log_bytes") >= n(&d, "live_bytes"));
    assert_eq!(n(&d, "provisioned_bytes"), 8 * MIB as u64);
    let human = ok(&["du", &v]);
    assert!(human.contains("EXCLUSIVE") && human.contains("<TOTAL>") && human.contains("log bytes"), "{human}");
    let (code, err) = fails(&["du", &env.uri("missing")]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn flatten_frees_the_base_snapshot() {
    // Property: flatten copies what a clone reads from its base and drops
    // the base; the clone exports the same, du shows nothing read from the
    // base, the base snapshot (then the base volume) can be deleted, and a
    // second flatten (or one of a plain volume) does nothing.
    let env = Env::new();
    let (base, child) = (env.uri("base"), env.uri("child"));
    ok(&["create", &base, "4M"]);
    let a = raw_with_holes(3 * MIB, 5);
    ok(&["import", &env.write_raw("a.raw", &a), &base]);
    ok(&["snapshot", "create", &base, "gold"]);
    ok(&["clone", &format!("{base}%gold"), &child]);
    let c = raw_with_holes(MIB / 2, 6);
    ok(&["import", "-n", &env.write_raw("c.raw", &c), &child]);
    ok(&["wipe", &child, "--offset", "2M", "--length", "256K"]);
    let before = export(&env, &child, "c0");
    let d = json(&ok(&["du", "--output", "json", &child]));
    assert_eq!(d["base"], format!("{base}%gold").as_str());
    let from_base = d["base_bytes"].as_u64().unwrap();
    assert!(from_base > 0, "{d}");
    assert_eq!(fails(&["snapshot", "delete", &base, "gold"]).0, 6);

    let r = json(&ok(&["flatten", "--output", "json", &child]));
    assert_eq!(r["base"], format!("{base}%gold").as_str(), "{r}");
    assert_eq!(r["bytes_copied"].as_u64().unwrap(), from_base - r["zero_blocks"].as_u64().unwrap() * BS as u64, "{r}");
    assert_eq!(export(&env, &child, "c1"), before);
    let d = json(&ok(&["du", "--output", "json", &child]));
    assert!(d["base"].is_null() && d["base_bytes"] == 0, "{d}");
    let info = json(&ok(&["info", "--output", "json", &child]));
    assert!(info["base"].is_null(), "{info}");
    let list = json(&ok(&["snapshot", "list", "--output", "json", &base]));
    assert_eq!(list[0]["clones"].as_array().unwrap().len(), 0, "{list}");
    ok(&["snapshot", "delete", &base, "gold"]);
    ok(&["delete", &base]);
    assert_eq!(export(&env, &child, "c2"), before);
    let again = ok(&["flatten", &child]);
    assert!(again.contains("not a clone"), "{again}");
    let (code, err) = fails(&["flatten", &format!("{child}%nosuch")]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(fails(&["flatten", &env.uri("missing")]).0, 3);
}
