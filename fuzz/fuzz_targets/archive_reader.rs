//! Fuzzes the verifying archive reader and the extractor: arbitrary bytes are read as
//! an uploaded archive (no expected manifest) and extracted into a fresh staging
//! directory. The first byte picks the input's form: odd means "the rest is a tar,
//! compress it first", so the fuzzer reaches the tar parser and the reader's own
//! checks instead of stopping at zstd's frame checksum.
//!
//! Fails on a panic, on anything created outside staging, and on an error message
//! (as clients see it) that is empty or not one printable line.
#![no_main]

use coffer_daemon::archive::{Extractor, Layout, read_archive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        zstd::encode_all(rest, 1).expect("zstd can compress anything")
    } else {
        rest.to_vec()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("a.tar.zst");
    std::fs::write(&archive, &bytes).expect("write input");
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).expect("staging dir");
    let layout = Layout {
        db: Some(staging.join("db/app.db")),
        media: vec![Some(staging.join("media/0")), Some(staging.join("media/1"))],
    };
    let mut extractor = Extractor::new(&layout);
    let result = read_archive(&archive, None, &mut extractor, &mut |_| {}, &|| false)
        .and_then(|ok| extractor.finish().map(|()| ok));
    if let Err(e) = result {
        let message = coffer_common::format::error_chain(&e);
        assert!(!message.is_empty(), "empty error message");
        assert!(
            !message.contains(char::is_control),
            "not one printable line: {message:?}"
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list temp dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.tar.zst", "staging"],
        "something was created outside staging"
    );
});
