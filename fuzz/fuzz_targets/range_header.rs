//! A download's `Range` header against a blob's size: what parses is one non-empty
//! range inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = data.split_first_chunk::<8>() else { return };
    let size = u64::from_le_bytes(*size);
    let Ok(header) = std::str::from_utf8(header) else { return };
    if let Some((start, end)) = wasmesh_api::wire::parse_byte_range(header, size) {
        assert!(start < end && end <= size, "{header:?} of {size} gave {start}..{end}");
    }
});
