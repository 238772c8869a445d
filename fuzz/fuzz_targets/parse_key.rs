//! Key parsing on hostile input: never panics; whatever parses has the
//! configured shape; a generated key always parses to its own id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teamkey_core::{KeyFormat, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let format = KeyFormat::default();
    let input = String::from_utf8_lossy(data);
    if let Ok(parsed) = format.parse(&input) {
        assert_eq!(input.len(), format.key_len());
        assert!(input.len() <= MAX_KEY_LEN);
        assert!(input.starts_with("tk_live_"));
        assert!(input.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert_eq!(&input[8..20], parsed.key_id().as_str());
    }
    // Splice the input into a valid key's body: only the untouched key parses.
    let key = format.generate().expect("OS randomness");
    let real = key.expose_secret();
    if data.is_empty() {
        return;
    }
    let at = 8 + usize::from(data[0]) % (real.len() - 8);
    let mut spliced = real.as_bytes().to_vec();
    spliced[at] = data.get(1).copied().unwrap_or(b'x');
    let spliced = String::from_utf8_lossy(&spliced);
    assert_eq!(format.parse(&spliced).is_ok(), spliced == real);
});
