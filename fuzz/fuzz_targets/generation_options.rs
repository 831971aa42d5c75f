//! The options JSON a guest passes with a generation: what parses is in range.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = wasmesh_engine::GenerateParams::from_json(data) {
        assert!(params.temp.is_finite() && params.temp >= 0.0, "{params:?}");
        assert!(params.top_p > 0.0 && params.top_p <= 1.0, "{params:?}");
        assert!((1..=wasmesh_engine::GenerateParams::MAX_PREDICT).contains(&params.n_predict), "{params:?}");
    }
});
