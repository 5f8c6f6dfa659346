//! Gives libhlfs.so its SONAME, `libhlfs.so.N`, where N is
//! `HLFS_ABI_VERSION` in include/hlfs.h: the header is the one place the
//! ABI version is written down (it says what bumps it), so the SONAME
//! cannot drift from it. Programs linked with `-lhlfs` then record
//! `NEEDED libhlfs.so.N` and load whichever compatible build the system's
//! loader finds (engine/install-lib.sh installs one; see engine/hlfs.pc.in).

use std::path::Path;

fn main() {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/hlfs.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    let abi = text
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some("HLFS_ABI_VERSION"))
                .then(|| w.next().map(str::to_owned))
                .flatten()
        })
        .unwrap_or_else(|| panic!("{} defines no HLFS_ABI_VERSION", header.display()));
    let abi: u32 = abi
        .parse()
        .unwrap_or_else(|_| panic!("HLFS_ABI_VERSION in {} is '{abi}', not a number", header.display()));
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhlfs.so.{abi}");
    println!("cargo:rustc-env=HLFS_ABI_VERSION={abi}");
}
