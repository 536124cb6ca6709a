//! Request framing + decoding (sans-io): a client's byte stream through the same steps as a connection.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringtide::protocol::fuzz::request_stream(data);
});
