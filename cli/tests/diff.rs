//! `hlfs diff`, `hlfs export-diff` and `hlfs import-diff`, run as built,
//! against local volumes; the volumes are changed and read back through
//! the engine directly.

use hlfs::{OpenOptions, Volume};
use std::io::Write;
use std::process::{Command, Output, Stdio};

const HLFS: &str = env!("CARGO_BIN_EXE_hlfs");
const BS: u64 = 4096;

fn run(args: &[&str]) -> Output {
    Command::new(HLFS).args(args).env_remove("RUST_LOG").output().expect("hlfs runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "hlfs {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> (i32, String) {
    let out = run(args);
    assert!(!out.status.success(), "hlfs {args:?} unexpectedly succeeded");
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// xorshift64*: deterministic pseudo-random words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn image(uri: &str) -> Vec<u8> {
    let v = Volume::open(uri, &OpenOptions::read_only()).unwrap_or_else(|e| panic!("opening {uri}: {e}"));
    let mut out = vec![0u8; v.size() as usize];
    for (i, c) in out.chunks_mut(1 << 20).enumerate() {
        v.read((i << 20) as u64, c).unwrap();
    }
    out
}

#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at block {}", i / BS as usize);
    }
}

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
    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn rw(uri: &str) -> Volume {
    Volume::open(uri, &OpenOptions::default()).unwrap_or_else(|e| panic!("opening {uri}: {e}"))
}

#[test]
fn diff_lists_changed_extents_in_text_and_json() {
    let env = Env::new();
    let u = env.uri("v");
    ok(&["create", &u, "16M"]);
    let v = rw(&u);
    v.write(0, &Rng(1).bytes(64 * BS as usize)).unwrap();
    v.snapshot_create("a").unwrap();
    v.write(10 * BS, &Rng(2).bytes(2 * BS as usize)).unwrap();
    v.discard(30 * BS, 2 * BS).unwrap();
    v.discard(100 * BS, 8 * BS).unwrap(); // never written: not a change
    v.write(1000 * BS, &Rng(3).bytes(BS as usize)).unwrap();
    v.snapshot_create("b").unwrap();
    v.write(3 * BS, &Rng(4).bytes(BS as usize)).unwrap();
    v.close().unwrap();

    let text = ok(&["diff", &format!("{u}%a"), &format!("{u}%b")]);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["Offset", "Length", "Type"], "{text}");
    assert_eq!(rows[1..], [["40960", "8192", "data"], ["122880", "8192", "zero"], ["4096000", "4096", "data"]], "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["diff", &format!("{u}%a"), &format!("{u}%b"), "--output", "json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"start": 40960, "length": 8192, "zero": false},
            {"start": 122880, "length": 8192, "zero": true},
            {"start": 4096000, "length": 4096, "zero": false},
        ])
    );
    // Against the head (by default, FROM's volume's head).
    let json: serde_json::Value = serde_json::from_str(&ok(&["diff", &format!("{u}%b"), "--output", "json"])).unwrap();
    assert_eq!(json, serde_json::json!([{"start": 12288, "length": 4096, "zero": false}]));
    assert_eq!(ok(&["diff", &format!("{u}%b"), &format!("{u}%b"), "--output", "json"]).trim(), "[]");

    // Mistakes name the thing and the fix.
    let (code, err) = fails(&["diff", &u]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("names no snapshot") && err.contains("%NAME"), "{err}");
    let (code, err) = fails(&["diff", &format!("{u}%nope"), &format!("{u}%b")]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no snapshot \"nope\"") && err.contains("a, b"), "{err}");
    let w = env.uri("w");
    ok(&["create", &w, "16M"]);
    ok(&["snapshot", "create", &w, "x"]);
    let (code, err) = fails(&["diff", &format!("{w}%x"), &u]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not related"), "{err}");
}

/// `hlfs export-diff TO - [--from A] | hlfs import-diff - T`.
fn pipe(to: &str, from: Option<&str>, target: &str) -> (String, String) {
    let mut args = vec!["export-diff", to, "-"];
    if let Some(f) = from {
        args.extend(["--from", f]);
    }
    let mut exp = Command::new(HLFS).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let imp = Command::new(HLFS)
        .args(["import-diff", "-", target])
        .stdin(exp.stdout.take().unwrap())
        .output()
        .unwrap();
    let e = exp.wait_with_output().unwrap();
    assert!(e.status.success(), "export-diff {args:?}: {}", String::from_utf8_lossy(&e.stderr));
    assert!(imp.status.success(), "import-diff -: {}", String::from_utf8_lossy(&imp.stderr));
    (String::from_utf8(imp.stdout).unwrap(), String::from_utf8(imp.stderr).unwrap())
}

/// Random writes and discards of whole blocks; returns the distinct
/// blocks touched.
fn churn(v: &Volume, rng: &mut Rng, n: usize) -> u64 {
    let blocks = v.size() / BS;
    let mut touched = std::collections::BTreeSet::new();
    for _ in 0..n {
        let b = rng.below(blocks);
        let len = (1 + rng.below(16)).min(blocks - b);
        if rng.below(8) == 0 {
            v.discard(b * BS, len * BS).unwrap();
        } else {
            v.write(b * BS, &rng.bytes((len * BS) as usize)).unwrap();
        }
        touched.extend(b..b + len);
    }
    touched.len() as u64
}

#[test]
fn a_backup_chain_through_files_and_pipes_matches_every_snapshot() {
    let env = Env::new();
    let (src, dst) = (env.uri("src"), env.uri("dst"));
    ok(&["create", &src, "32M"]);
    let mut rng = Rng(0x5eed);
    let v = rw(&src);
    v.write(0, &rng.bytes(12 << 20)).unwrap();
    v.snapshot_create("s0").unwrap();
    v.close().unwrap();
    let full = env.file("s0.diff");
    let out = ok(&["export-diff", &format!("{src}%s0"), &full]);
    assert!(out.contains("12582912 bytes of data"), "{out}");
    let len = std::fs::metadata(&full).unwrap().len();
    assert!(len >= 12 << 20 && len < (12 << 20) + 4096, "a full diff of 12 MiB of data is {len} bytes");
    ok(&["create", &dst, "32M"]);
    let out = ok(&["import-diff", &full, &dst]);
    assert!(out.contains("imported snapshot \"s0\"") && out.contains("(full)"), "{out}");
    for r in 1..=5 {
        let v = rw(&src);
        let touched = churn(&v, &mut rng, 40);
        let name = format!("s{r}");
        v.snapshot_create(&name).unwrap();
        v.write(0, &rng.bytes(BS as usize)).unwrap(); // after the snapshot: not in it
        v.close().unwrap();
        let prev = format!("s{}", r - 1);
        if r % 2 == 1 {
            let f = env.file(&format!("{name}.diff"));
            ok(&["export-diff", &format!("{src}%{name}"), &f, "--from", &prev]);
            // The diff is the changed data plus 32 bytes a record and a few hundred more.
            let len = std::fs::metadata(&f).unwrap().len();
            let limit = touched * BS + touched * 32 + 512;
            assert!(len <= limit && len > touched * BS / 2, "{name}: diff of {touched} changed blocks is {len} bytes");
            eprintln!("{name}: {touched} blocks changed ({} bytes), diff file {len} bytes", touched * BS);
            ok(&["import-diff", &f, &dst]);
        } else {
            pipe(&format!("{src}%{name}"), Some(&prev), &dst);
        }
        for k in 0..=r {
            let s = format!("s{k}");
            assert_same(&format!("round {r}: {s}"), &image(&format!("{dst}%{s}")), &image(&format!("{src}%{s}")));
        }
    }
    assert_same("head", &image(&dst), &image(&format!("{src}%s5")));
    let list = ok(&["snapshot", "list", &dst, "--output", "json"]);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&list).unwrap().as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4", "s5"]);
    // Each imported snapshot names the source's snapshot it reproduces.
    let src_info: serde_json::Value = serde_json::from_str(&ok(&["info", &src, "--output", "json"])).unwrap();
    let src_snaps: serde_json::Value = serde_json::from_str(&ok(&["snapshot", "list", &src, "--output", "json"])).unwrap();
    let dst_snaps: serde_json::Value = serde_json::from_str(&list).unwrap();
    for (d, s) in dst_snaps.as_array().unwrap().iter().zip(src_snaps.as_array().unwrap()) {
        assert_eq!(d["source"]["volume_uuid"], src_info["uuid"], "{d}");
        assert_eq!(d["source"]["snapshot_id"], s["id"], "{d}");
    }
    assert!(src_snaps[0]["source"].is_null(), "a snapshot taken in place has no source");
    let human = ok(&["snapshot", "list", &dst]);
    assert!(human.contains(&format!("s3 was taken by import-diff: it reproduces snapshot id {} of volume {}", src_snaps[3]["id"], src_info["uuid"].as_str().unwrap())), "{human}");
    // Importing a diff already in: nothing to do, and says so.
    let out = ok(&["import-diff", &env.file("s5.diff"), &dst]);
    assert!(out.contains("already has snapshot \"s5\""), "{out}");
    // A damaged copy is refused, naming the damage, and changes nothing.
    let v = rw(&src);
    churn(&v, &mut rng, 20);
    v.snapshot_create("s6").unwrap();
    v.close().unwrap();
    let f = env.file("s6.diff");
    ok(&["export-diff", &format!("{src}%s6"), &f, "--from", "s5"]);
    let good = std::fs::read(&f).unwrap();
    let before = image(&dst);
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    std::fs::write(&f, &bad).unwrap();
    let (code, err) = fails(&["import-diff", &f, &dst]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("damaged") && err.contains("left as it was"), "{err}");
    std::fs::write(&f, &good[..good.len() - 100]).unwrap();
    let (code, err) = fails(&["import-diff", &f, &dst]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("ends early"), "{err}");
    assert_same("after the refused diffs", &image(&dst), &before);
    assert!(!ok(&["snapshot", "list", &dst]).contains("s6"));
    std::fs::write(&f, &good).unwrap();
    ok(&["import-diff", &f, &dst]);
    assert_same("s6", &image(&format!("{dst}%s6")), &image(&format!("{src}%s6")));
}

#[test]
fn export_reads_a_volume_in_use_and_import_needs_the_lock() {
    let env = Env::new();
    let (src, dst) = (env.uri("src"), env.uri("dst"));
    ok(&["create", &src, "8M"]);
    ok(&["create", &dst, "8M"]);
    let v = rw(&src);
    v.write(0, &Rng(9).bytes(1 << 20)).unwrap();
    v.snapshot_create("a").unwrap();
    v.write(0, &Rng(10).bytes(1 << 20)).unwrap();
    // The writer holds src open: export-diff reads the snapshot anyway.
    let f = env.file("a.diff");
    ok(&["export-diff", &format!("{src}%a"), &f]);
    let holder = rw(&dst);
    let (code, err) = fails(&["import-diff", &f, &dst]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "the holder is named: {err}");
    drop(holder);
    ok(&["import-diff", &f, &dst]);
    v.close().unwrap();
    assert_same("a", &image(&format!("{dst}%a")), &image(&format!("{src}%a")));
    // Head or a snapshot URI where the other is needed.
    let (code, err) = fails(&["export-diff", &src, &f]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("names no snapshot"), "{err}");
    let (code, err) = fails(&["import-diff", &f, &format!("{dst}%a")]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = fails(&["export-diff", &format!("{src}%a"), &f, "--from", "nope"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no snapshot \"nope\""), "{err}");
    for cmd in ["diff", "export-diff", "import-diff"] {
        let h = ok(&[cmd, "--help"]);
        assert!(h.contains("Examples:") && h.len() > 300, "{cmd} --help: {h}");
    }
    assert!(ok(&["diff", "--help"]).contains("qemu-img map"));
}

/// `hlfs import-diff` is killed (SIGKILL) at random points: after a random
/// prefix of the stream reached it, or after the whole stream and a random
/// delay. Each time the target's snapshot s0 is intact, and running the
/// import again finishes it: s1 and the head read as the source's s1.
#[test]
fn an_import_killed_at_random_points_is_finished_by_running_it_again() {
    let env = Env::new();
    let (src, dst) = (env.uri("src"), env.uri("dst"));
    ok(&["create", &src, "8M"]);
    let mut rng = Rng(0xc0ffee);
    let v = rw(&src);
    v.write(0, &rng.bytes(4 << 20)).unwrap();
    v.snapshot_create("s0").unwrap();
    churn(&v, &mut rng, 150);
    v.snapshot_create("s1").unwrap();
    v.close().unwrap();
    let (s0, s1) = (image(&format!("{src}%s0")), image(&format!("{src}%s1")));
    let (full, inc) = (env.file("full"), env.file("inc"));
    ok(&["export-diff", &format!("{src}%s0"), &full]);
    ok(&["export-diff", &format!("{src}%s1"), &inc, "--from", "s0"]);
    let stream = std::fs::read(&inc).unwrap();
    ok(&["create", &dst, "8M"]);
    ok(&["import-diff", &full, &dst]);
    // How long applying the stream takes here (a loaded machine is many
    // times slower): the kills land up to that long after the stream
    // reached the import.
    let t = std::time::Instant::now();
    ok(&["import-diff", &inc, &dst]);
    let apply_ms = (t.elapsed().as_millis() as u64).max(40);
    ok(&["snapshot", "revert", &dst, "s0"]);
    ok(&["snapshot", "delete", &dst, "s1"]);
    let (mut resumed, mut already, mut points) = (0, 0, 0);
    let start = std::time::Instant::now();
    for k in 0..50 {
        let cut = if rng.below(5) == 0 { stream.len() } else { rng.below(stream.len() as u64) as usize };
        let delay = std::time::Duration::from_millis(rng.below(apply_ms));
        let mut child = Command::new(HLFS)
            .args(["import-diff", "-", &dst])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let part = stream[..cut].to_vec();
        let whole = cut == stream.len();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&part);
            // Holding stdin open keeps a cut import waiting for more.
            (!whole).then_some(stdin)
        });
        // Once the import has read the prefix (all but a pipe's worth).
        let open_stdin = feeder.join().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        drop(open_stdin);
        points += 1;
        let what = format!("kill {k} (after {cut} of {} bytes, {delay:?})", stream.len());
        assert_same(&format!("{what}: s0"), &image(&format!("{dst}%s0")), &s0);
        let out = run(&["import-diff", &inc, &dst]);
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{what}: importing again failed: {se}");
        resumed += se.contains("discarded the partial changes") as u32;
        already += so.contains("already has") as u32;
        assert_same(&format!("{what}: s1"), &image(&format!("{dst}%s1")), &s1);
        assert_same(&format!("{what}: head"), &image(&dst), &s1);
        // Back to s0 for the next round.
        ok(&["snapshot", "revert", &dst, "s0"]);
        ok(&["snapshot", "delete", &dst, "s1"]);
        assert!(!ok(&["snapshot", "list", &dst]).contains("pre-revert"));
    }
    eprintln!(
        "{points} kills of import-diff ({} bytes): {resumed} left partial changes that the next run discarded, \
         {already} had finished (applying it whole takes {apply_ms} ms here); {:.1} s",
        stream.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(resumed >= 5, "only {resumed} of {points} kills landed while changes were being applied");
}
