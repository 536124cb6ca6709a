//! Replays every file of the fuzz corpus (`fuzz/corpus/{requests,records,storage}`: frames and batches
//! captured from kafka-python, librdkafka and the Java client by `fuzz/capture.py`, partition directories
//! of a real broker packed by `fuzz/pack_storage.py`, plus what fuzzing added) through the fuzz targets'
//! own checks, on stable Rust, as part of `cargo test`.

use std::path::Path;

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("read corpus file"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn request_corpus_decodes_and_round_trips() {
    let corpus = files("requests");
    assert!(
        corpus.len() >= 30,
        "request corpus too small: {}",
        corpus.len()
    );
    let mut decoded = 0;
    for (name, data) in &corpus {
        let n = ringtide::protocol::fuzz::request_stream(data);
        // Files captured from real clients (named <client>-api..) are valid requests.
        if ["kafka-python-", "librdkafka-", "java-"]
            .iter()
            .any(|c| name.rsplit('/').next().unwrap_or_default().starts_with(c))
        {
            // Clients open with their newest ApiVersions version, which may be newer than the codec's
            // (Kafka 4.4's Java client sends v5): the broker answers that with UNSUPPORTED_VERSION.
            let api_versions_probe = data.len() >= 8 && data[4..6] == [0, 18];
            assert!(
                n == 1 || api_versions_probe,
                "{name}: a captured client request did not decode"
            );
        }
        decoded += n;
    }
    assert!(decoded >= 30);
}

#[test]
fn records_corpus_validates() {
    let corpus = files("records");
    assert!(
        corpus.len() >= 10,
        "records corpus too small: {}",
        corpus.len()
    );
    for (name, data) in &corpus {
        let n = ringtide::protocol::fuzz::record_batches(data);
        if ["kafka-python-", "librdkafka-", "java-"]
            .iter()
            .any(|c| name.rsplit('/').next().unwrap_or_default().starts_with(c))
        {
            assert_eq!(n, 1, "{name}: a captured batch did not validate");
        }
    }
}

#[test]
fn storage_corpus_recovers_and_reads_back() {
    let corpus = files("storage");
    assert!(
        corpus.len() >= 4,
        "storage corpus too small: {}",
        corpus.len()
    );
    for (name, data) in &corpus {
        let out = ringtide::storage::fuzz::storage_files(data);
        // Partition directories packed from a real broker (named broker-..) recover and read back whole.
        if name
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .starts_with("broker-")
        {
            assert_eq!(out.open_error, None, "{name}");
            assert_eq!(out.read_error, None, "{name}");
            assert!(out.batches_read > 0, "{name}: {out:?}");
        }
    }
}
