//! Record-batch validation (`ringtide::records::validate_batches`, `iter_batches`) on untrusted bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringtide::protocol::fuzz::record_batches(data);
});
