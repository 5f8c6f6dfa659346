//! The small decoders behind the index and checkpoints: index map values,
//! log positions and the encoded volume state, each with a round trip.
#![no_main]

use hlfs::index::Entry;
use hlfs::log::LogPos;
use hlfs::state::VolState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::decode(data) {
        assert_eq!(Entry::decode(&e.encode()).expect("re-decode entry"), e);
    }
    if let Ok(p) = LogPos::decode(data) {
        assert_eq!(LogPos::decode(&p.encode()).expect("re-decode position"), p);
    }
    if let Ok(s) = VolState::decode(data) {
        let again = VolState::decode(&s.encode()).expect("re-decode state");
        assert_eq!(again, s);
    }
});
