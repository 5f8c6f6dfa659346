//! What users type: volume URIs, snapshot names and sizes. Whatever parses
//! must print back to something that parses to the same thing.
#![no_main]

use hlfs::{parse_size, validate_snapshot_name, VolumeUri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(u) = VolumeUri::parse(s) {
        let printed = u.to_string();
        let again = VolumeUri::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} parsed, but its printed form {printed:?} does not: {e}"));
        assert_eq!(again, u, "round trip of {s:?} via {printed:?}");
        assert!(!u.path.contains("/../") && !u.path.ends_with("/.."), "{u:?}");
        assert_eq!(u.without_snapshot().snapshot, None);
    }
    if validate_snapshot_name(s).is_ok() {
        let base = VolumeUri::parse("local:///v/vol").expect("base");
        let with = base.with_snapshot(s);
        let again = VolumeUri::parse(&with.to_string()).expect("volume with a valid snapshot name");
        assert_eq!(again.snapshot.as_deref(), Some(s));
    }
    if let Ok(n) = parse_size(s) {
        assert_eq!(parse_size(&n.to_string()).expect("plain number"), n);
    }
});
