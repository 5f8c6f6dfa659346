//! The hlfs pool of our patched libvirt, driven through the `virt` crate
//! against a running libvirtd (tests/e2e/libvirt_clients.sh starts a private
//! one and sets the environment):
//!
//!   HLFS_LIBVIRT_URI       the daemon, e.g. qemu+unix:///system?socket=/tmp/…/libvirt-sock
//!   HLFS_LIBVIRT_POOL_DIR  an existing directory; each test makes its pool in a sub-directory
//!   HLFS_LIBVIRT_PREFIX    the libvirt install prefix (libvirt-pool/build.sh); the client
//!                          library loaded by this test must come from it
//!   HLFS_CLI               the hlfs CLI the daemon uses, to check results independently
//!
//! A missing variable fails the test (it does not skip). Each test owns one
//! pool named after it and removes it, also when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hlfs_libvirt::virt::connect::Connect;
use hlfs_libvirt::virt::storage_vol::StorageVol;
use hlfs_libvirt::virt::sys;
use hlfs_libvirt::{check_volume_name, Error, HlfsPool};

const MIB: u64 = 1 << 20;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a running patched libvirtd; run \
             tests/e2e/libvirt_clients.sh (it starts one and sets HLFS_LIBVIRT_URI, \
             HLFS_LIBVIRT_POOL_DIR, HLFS_LIBVIRT_PREFIX and HLFS_CLI)"
        )
    })
}

fn connect() -> Connect {
    hlfs_libvirt::virt::error::clear_error_callback();
    let uri = var("HLFS_LIBVIRT_URI");
    Connect::open(Some(&uri)).unwrap_or_else(|e| panic!("cannot connect to {uri}: {e}"))
}

/// `hlfs info --output json URI` of the CLI the daemon uses.
fn cli_info(uri: &str) -> serde_json::Value {
    let out = Command::new(var("HLFS_CLI"))
        .args(["info", "--output", "json", uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hlfs info {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pseudo-random bytes (xorshift64*), seeded per call so runs differ.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn download(pool: &HlfsPool, vol: &StorageVol) -> Vec<u8> {
    let mut out = Vec::new();
    let n = pool.download(vol, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One test's pool in POOL_DIR/TEST/pool: defined, built and started;
/// destroyed and undefined on drop.
struct TestPool {
    _conn: Connect,
    pool: HlfsPool,
    dir: PathBuf,
}

impl TestPool {
    fn new(test: &str) -> TestPool {
        let conn = connect();
        // POOL_DIR/TEST/pool: POOL_DIR/TEST belongs to this test alone.
        let own = Path::new(&var("HLFS_LIBVIRT_POOL_DIR")).join(test);
        fs::create_dir(&own).unwrap();
        let dir = own.join("pool");
        let name = format!("hlfs-rs-{test}-{}", std::process::id());
        let pool = HlfsPool::define(&conn, &name, &format!("local://{}", dir.display())).unwrap();
        pool.build().unwrap();
        pool.start().unwrap();
        TestPool {
            _conn: conn,
            pool,
            dir,
        }
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // Best effort: the test may have removed the pool itself.
        let _ = self.pool.destroy();
        let _ = self.pool.undefine();
    }
}

/// libvirt-python and virt must talk to the daemon through our libvirt:
/// the client library is 11.3.0 and mapped from HLFS_LIBVIRT_PREFIX, and
/// the daemon is 11.3.0 too.
#[test]
fn client_library_is_the_patched_build() {
    let conn = connect();
    assert_eq!(
        Connect::version().unwrap(),
        11_003_000,
        "client library version"
    );
    assert_eq!(
        conn.lib_version().unwrap(),
        11_003_000,
        "daemon's library version"
    );
    let prefix = fs::canonicalize(var("HLFS_LIBVIRT_PREFIX")).unwrap();
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("/libvirt.so"))
        .collect();
    assert!(!libs.is_empty(), "libvirt.so is not mapped");
    for lib in libs {
        assert!(
            Path::new(lib).starts_with(&prefix),
            "libvirt.so mapped from {lib}, not from {}",
            prefix.display()
        );
    }
}

/// define → build (mkdir) → start → info/XML → refresh picks up a volume
/// made by the CLI → destroy → delete (rmdir) → undefine.
#[test]
fn pool_lifecycle() {
    let conn = connect();
    let dir = Path::new(&var("HLFS_LIBVIRT_POOL_DIR")).join("lifecycle");
    let name = format!("hlfs-rs-lifecycle-{}", std::process::id());
    let uri = format!("local://{}", dir.display());
    let pool = HlfsPool::define(&conn, &name, &uri).unwrap();
    assert!(
        HlfsPool::list_names(&conn).unwrap().contains(&name),
        "listed with the HLFS type flag"
    );
    let dir_pools = conn
        .list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_DIR)
        .unwrap();
    assert!(
        dir_pools.iter().all(|p| p.name().unwrap() != name),
        "not listed as a dir pool"
    );
    assert!(pool.pool().is_persistent().unwrap());
    assert!(!pool.pool().is_active().unwrap());
    assert!(!dir.exists());
    pool.build().unwrap();
    assert!(dir.is_dir(), "build creates {}", dir.display());
    pool.start().unwrap();
    assert!(pool.pool().is_active().unwrap());

    let info = pool.pool().info().unwrap();
    assert_eq!(info.state, sys::VIR_STORAGE_POOL_RUNNING);
    assert!(
        info.capacity > 0 && info.available <= info.capacity,
        "statvfs numbers: {info:?}"
    );
    let xml = pool.pool().xml_desc(0).unwrap();
    assert!(xml.contains("<pool type='hlfs'>"), "{xml}");
    assert!(xml.contains(&format!("<name>{uri}</name>")), "{xml}");
    assert_eq!(pool.volume_names().unwrap(), Vec::<String>::new());

    let st = Command::new(var("HLFS_CLI"))
        .args(["create", &format!("{uri}/ext"), "1M"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        pool.volume_names().unwrap(),
        Vec::<String>::new(),
        "not listed before refresh"
    );
    pool.refresh().unwrap();
    assert_eq!(pool.volume_names().unwrap(), ["ext"]);
    pool.volume("ext").unwrap().delete(0).unwrap();

    pool.destroy().unwrap();
    assert!(!pool.pool().is_active().unwrap());
    pool.delete().unwrap();
    assert!(!dir.exists(), "delete removes {}", dir.display());
    pool.undefine().unwrap();
    assert!(conn
        .list_defined_storage_pools()
        .unwrap()
        .iter()
        .all(|p| p != &name));
}

/// createXML → list/info/key/path/XMLDesc agree with `hlfs info`; resize
/// grows, shrinking is refused.
#[test]
fn volume_create_info_resize() {
    let t = TestPool::new("create");
    let p = &t.pool;
    // 1000000 bytes: the backend rounds up to a multiple of 512.
    let vol = p.create_volume("vm1", 1_000_000).unwrap();
    assert_eq!(p.volume_names().unwrap(), ["vm1"]);
    let info = vol.info().unwrap();
    assert_eq!(info.kind, sys::VIR_STORAGE_VOL_NETWORK);
    assert_eq!(info.capacity, 1_000_448);
    let uri = p.volume_uri("vm1");
    assert_eq!(vol.key().unwrap(), uri);
    assert_eq!(vol.path().unwrap(), uri);
    let xml = vol.xml_desc(0).unwrap();
    assert!(
        xml.contains("<capacity unit='bytes'>1000448</capacity>"),
        "{xml}"
    );
    assert!(xml.contains("<format type='raw'/>"), "{xml}");
    let ci = cli_info(&uri);
    assert_eq!(ci["virtual_size"], 1_000_448);
    assert_eq!(info.allocation, ci["allocated_bytes"].as_u64().unwrap());
    assert!(t.dir.join("vm1").is_dir());

    vol.resize(128 * MIB, 0).unwrap();
    assert_eq!(vol.info().unwrap().capacity, 128 * MIB);
    assert_eq!(cli_info(&uri)["virtual_size"], 128 * MIB);
    let e = vol
        .resize(64 * MIB, sys::VIR_STORAGE_VOL_RESIZE_SHRINK)
        .unwrap_err();
    assert!(e.message().contains("cannot shrink"), "{e}");
    assert_eq!(vol.info().unwrap().capacity, 128 * MIB);

    let e = p.create_volume("vm1", MIB).unwrap_err();
    assert!(
        e.libvirt().is_some(),
        "a second vm1 is refused by libvirt: {e}"
    );
    vol.delete(0).unwrap();
    assert!(entries(&t.dir).is_empty());
}

/// Upload random data, download it back byte-exact (the rest reads zeros);
/// too much data and a partial download are refused; wipe makes it all zeros.
#[test]
fn upload_download_wipe() {
    let t = TestPool::new("stream");
    let p = &t.pool;
    let vol = p.create_volume("data", 8 * MIB).unwrap();
    let data = random_bytes((5 * MIB) as usize + 3 * 512);
    assert_eq!(p.upload(&vol, &mut &data[..]).unwrap(), data.len() as u64);
    let back = download(p, &vol);
    assert_eq!(back.len() as u64, 8 * MIB);
    assert!(
        back[..data.len()] == data[..],
        "downloaded bytes differ from the uploaded ones"
    );
    assert!(
        back[data.len()..].iter().all(|&b| b == 0),
        "the rest of the volume reads zeros"
    );

    // The CLI sees the same bytes (export to stdout).
    let out = Command::new(var("HLFS_CLI"))
        .args(["export", &p.volume_uri("data"), "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == back, "hlfs export differs from the download");

    let too_big = random_bytes((9 * MIB) as usize);
    let e = p.upload(&vol, &mut &too_big[..]).unwrap_err();
    assert!(e.libvirt().is_some(), "{e}");

    let conn = p.pool().connect().unwrap();
    let stream = hlfs_libvirt::virt::stream::Stream::new(&conn, 0).unwrap();
    let e = vol.download(&stream, 0, MIB, 0).unwrap_err();
    assert!(e.message().contains("downloaded whole"), "{e}");
    drop(stream);

    let e = vol
        .wipe_pattern(sys::VIR_STORAGE_VOL_WIPE_ALG_RANDOM, 0)
        .unwrap_err();
    assert!(
        e.message()
            .contains("only support the 'zero' wipe algorithm"),
        "{e}"
    );
    vol.wipe(0).unwrap();
    let wiped = download(p, &vol);
    assert_eq!(wiped.len() as u64, 8 * MIB);
    assert!(wiped.iter().all(|&b| b == 0), "a wiped volume reads zeros");
    vol.delete(0).unwrap();
}

/// createXMLFrom makes an O(1) clone of a snapshot: same contents, later
/// writes to the source do not show in it, and the source cannot be deleted
/// while the clone exists.
#[test]
fn clone_and_delete() {
    let t = TestPool::new("clone");
    let p = &t.pool;
    let src = p.create_volume("src", 4 * MIB).unwrap();
    let data = random_bytes((2 * MIB) as usize);
    p.upload(&src, &mut &data[..]).unwrap();
    let before = download(p, &src);

    let clone = p.clone_volume(&src, "src-clone").unwrap();
    assert_eq!(p.volume_names().unwrap(), ["src", "src-clone"]);
    assert_eq!(clone.info().unwrap().capacity, 4 * MIB);
    let base = cli_info(&p.volume_uri("src-clone"))["base"]
        .as_str()
        .unwrap()
        .to_owned();
    let want = format!("{}/src%libvirt-clone-", p.uri());
    assert!(
        base.starts_with(&want),
        "clone's base {base} is a libvirt-clone snapshot of src"
    );
    assert!(
        download(p, &clone) == before,
        "the clone has the source's contents"
    );

    let other = random_bytes(MIB as usize);
    p.upload(&src, &mut &other[..]).unwrap();
    assert!(download(p, &src)[..other.len()] == other[..]);
    assert!(
        download(p, &clone) == before,
        "writes to the source do not reach the clone"
    );

    let e = src.delete(0).unwrap_err();
    assert!(
        e.message().contains("clones depend on its snapshots"),
        "{e}"
    );
    assert_eq!(p.volume_names().unwrap(), ["src", "src-clone"]);
    clone.delete(0).unwrap();
    src.delete(0).unwrap();
    assert!(p.volume_names().unwrap().is_empty());
    assert!(entries(&t.dir).is_empty());
}

/// Unsafe names are refused by the crate before any call, and by the
/// daemon when sent anyway (raw XML); nothing appears on disk.
#[test]
fn bad_volume_names_are_refused() {
    let t = TestPool::new("names");
    let p = &t.pool;
    let parent = t.dir.parent().unwrap().to_owned();
    let parent_before = entries(&parent);
    for bad in [
        "../evil",
        "a/b",
        "a%b",
        "a;touch x",
        "$(id)",
        "-rf",
        ".hidden",
    ] {
        let e = check_volume_name(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }));
        let e = p.create_volume(bad, MIB).unwrap_err();
        assert!(
            matches!(e, Error::InvalidName { .. }),
            "the crate refuses '{bad}': {e}"
        );

        let xml = format!(
            "<volume><name>{bad}</name><capacity unit='bytes'>1048576</capacity>\
             <target><format type='raw'/></target></volume>"
        );
        let e = StorageVol::create_xml(p.pool(), &xml, 0).unwrap_err();
        let msg = e.message();
        assert!(
            msg.contains(&format!("invalid HLFS volume name '{bad}'")),
            "the daemon refuses '{bad}' with a clear message, got: {e}"
        );
        println!("refused {bad:?}: {msg}");
    }
    assert!(
        entries(&t.dir).is_empty(),
        "nothing created in the pool: {:?}",
        entries(&t.dir)
    );
    assert_eq!(
        entries(&parent),
        parent_before,
        "nothing created next to the pool"
    );
    assert!(p.volume_names().unwrap().is_empty());
}
