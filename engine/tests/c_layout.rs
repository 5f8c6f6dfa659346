//! The C ABI's structs and constants agree with their Rust mirrors: a C
//! program built against include/hlfs.h with the system's `cc` prints
//! sizeof, _Alignof, and each member's offsetof and sizeof; the same
//! figures come from `size_of`, `align_of` and `offset_of!` of the
//! `#[repr(C)]` types in src/ffi.rs. Every `typedef struct ... {` of the
//! header must be covered here, so a struct added to hlfs.h without a
//! check fails too. (Mutation: swapping two members in either file, or
//! resizing one, fails this test.)

use hlfs::ffi::{HlfsSnapshotInfo, HlfsVolumeInfo, HLFS_OPEN_DIRECT, HLFS_OPEN_RDWR};
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

/// The size of the field a projection returns.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// (C struct name, Rust size, Rust alignment, [(member, offset, size)]).
type Layout = (&'static str, usize, usize, Vec<(&'static str, usize, usize)>);

macro_rules! layout {
    ($c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        (
            $c,
            size_of::<$t>(),
            align_of::<$t>(),
            vec![$((stringify!($f), offset_of!($t, $f), field_size(|s: &$t| &s.$f))),*],
        )
    };
}

fn rust_layouts() -> Vec<Layout> {
    vec![
        layout!(
            "hlfs_snapshot_info",
            HlfsSnapshotInfo,
            [name, id, ctime_sec, ctime_nsec, virtual_size, bytes, vm_state_size, vm_clock_nsec]
        ),
        layout!(
            "hlfs_volume_info",
            HlfsVolumeInfo,
            [live_bytes, head_bytes, base_uri, base_snapshot]
        ),
    ]
}

/// Constants of hlfs.h and their Rust values.
fn rust_constants() -> Vec<(&'static str, u64)> {
    vec![
        ("HLFS_OPEN_RDWR", HLFS_OPEN_RDWR as u64),
        ("HLFS_OPEN_DIRECT", HLFS_OPEN_DIRECT as u64),
        // The name buffer of hlfs_snapshot_info is HLFS_SNAPSHOT_NAME_MAX + 1.
        (
            "HLFS_SNAPSHOT_NAME_MAX",
            (field_size(|s: &HlfsSnapshotInfo| &s.name) - 1) as u64,
        ),
        ("HLFS_ABI_VERSION", env!("HLFS_ABI_VERSION").parse().unwrap()),
    ]
}

/// Names of the structs the header defines (`typedef struct NAME {`).
fn header_structs(header: &str) -> Vec<String> {
    header
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("typedef struct ")?;
            let name = rest.split_whitespace().next()?;
            rest.trim_end().ends_with('{').then(|| name.to_string())
        })
        .collect()
}

#[test]
fn c_struct_layouts_match_rust() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let header = std::fs::read_to_string(include.join("hlfs.h")).unwrap();
    let layouts = rust_layouts();
    let constants = rust_constants();

    let covered: Vec<&str> = layouts.iter().map(|l| l.0).collect();
    for s in header_structs(&header) {
        assert!(
            covered.contains(&s.as_str()),
            "hlfs.h defines struct {s}, which this test does not check: add its Rust mirror to rust_layouts()"
        );
    }

    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"hlfs.h\"\nint main(void) {\n");
    for (name, _, _, fields) in &layouts {
        c += &format!(
            "  printf(\"{name} size %zu\\n{name} align %zu\\n\", sizeof({name}), _Alignof({name}));\n"
        );
        for (f, _, _) in fields {
            c += &format!(
                "  printf(\"{name}.{f} offset %zu\\n{name}.{f} size %zu\\n\", offsetof({name}, {f}), sizeof((({name} *)0)->{f}));\n"
            );
        }
    }
    for (k, _) in &constants {
        c += &format!("  printf(\"{k} value %llu\\n\", (unsigned long long)({k}));\n");
    }
    c += "  return 0;\n}\n";

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let exe = dir.path().join("layout");
    std::fs::write(&src, &c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler '{cc}' (set CC to another): {e}"));
    assert!(
        out.status.success(),
        "compiling against hlfs.h failed:\n{}\n{c}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let c_said: BTreeMap<String, u64> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();

    let mut rust_said = BTreeMap::new();
    for (name, size, align, fields) in &layouts {
        rust_said.insert(format!("{name} size"), *size as u64);
        rust_said.insert(format!("{name} align"), *align as u64);
        for (f, off, sz) in fields {
            rust_said.insert(format!("{name}.{f} offset"), *off as u64);
            rust_said.insert(format!("{name}.{f} size"), *sz as u64);
        }
    }
    for (k, v) in &constants {
        rust_said.insert(format!("{k} value"), *v);
    }

    let diffs: Vec<String> = rust_said
        .iter()
        .filter(|(k, v)| c_said.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: C {:?}, Rust {v}", c_said.get(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "hlfs.h and src/ffi.rs disagree (a changed layout also needs HLFS_ABI_VERSION bumped):\n  {}",
        diffs.join("\n  ")
    );
    assert_eq!(c_said.len(), rust_said.len());
}
