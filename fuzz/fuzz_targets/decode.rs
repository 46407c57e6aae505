//! Frame decoding: any text a client can send must decode or give an error, never panic;
//! a decoded frame re-encodes to text that decodes again to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match herald::protocol::decode(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("a decoded frame serializes");
            let back = herald::protocol::decode(&again).expect("re-encoded frame decodes");
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&frame).unwrap()
            );
        }
        Err(e) => {
            // The error must be presentable.
            let _ = e.to_string();
        }
    }
});
