//! `wasmesh.toml` as a deploy uploads it, and the names in it: a manifest that
//! parses has limits the node's caps can lower, and model references that parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmesh_api::{ApiKey, AppManifest, AppPath, LimitCaps, ModelRef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(manifest) = AppManifest::parse(text) {
        let caps = LimitCaps::default();
        for spec in manifest.component.values() {
            let (limits, _) = spec.limits.capped(&caps);
            assert!(limits.timeout_ms() <= caps.timeout_ms);
            assert!(limits.memory_bytes() <= caps.memory_mb << 20);
        }
    }
    let _ = ModelRef::parse(text);
    let _ = AppPath::parse(text);
    let _ = ApiKey::parse(text);
});
