//! Recovery and the read path on arbitrary partition files: segments, indexes, a producer snapshot, the
//! recovery-point checkpoint and the clean-shutdown marker (layout in `src/storage/fuzz.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringtide::storage::fuzz::storage_files(data);
});
