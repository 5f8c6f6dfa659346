//! Links the tests and examples with an rpath to the libvirt that
//! pkg-config finds (virt-sys links `-lvirt` from the same place), so they
//! load that library at run time, not another one on the system.

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let lib = pkg_config::Config::new()
        .atleast_version("11.3.0")
        .cargo_metadata(false)
        .probe("libvirt")
        .unwrap_or_else(|e| {
            panic!(
                "libvirt >= 11.3.0 not found by pkg-config ({e}); set PKG_CONFIG_PATH to the \
                 directory of libvirt.pc under the prefix printed by libvirt-pool/build.sh"
            )
        });
    for dir in &lib.link_paths {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
