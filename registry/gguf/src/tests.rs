use super::*;
use crate::fixture::{write_gguf, write_gguf_to};

type Tensors<'a> = &'a [(&'a str, &'a [u64], u32)];

fn gguf(metadata: &[(&str, Value)], tensors: Tensors) -> Vec<u8> {
    let mut out = Vec::new();
    write_gguf_to(&mut out, metadata, tensors).expect("fixture");
    out
}

fn header(metadata: &[(&str, Value)], tensors: Tensors) -> Header {
    read_header(&gguf(metadata, tensors)[..]).expect("fixture reads back")
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// A header by hand: magic, version, counts, then `rest`.
fn raw(version: u32, tensors: u64, kvs: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kvs.to_le_bytes());
    out.extend(rest);
    out
}

fn raw_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

fn err(bytes: &[u8]) -> GgufError {
    read_header(bytes).expect_err("must be rejected")
}

#[test]
fn round_trip_keeps_every_value_type_and_skips_big_arrays() {
    let strings = |n: usize| (0..n).map(|i| s(&format!("tok{i}"))).collect::<Vec<_>>();
    let metadata = [
        ("u8", Value::U8(7)),
        ("i8", Value::I8(-7)),
        ("u16", Value::U16(700)),
        ("i16", Value::I16(-700)),
        ("u32", Value::U32(70_000)),
        ("i32", Value::I32(-70_000)),
        ("f32", Value::F32(1.5)),
        ("bool", Value::Bool(true)),
        ("str", s("héllo")),
        ("u64", Value::U64(1 << 40)),
        ("i64", Value::I64(-(1 << 40))),
        ("f64", Value::F64(2.25)),
        ("small", Value::Array { item_type: ValueType::String, len: 3, items: Some(strings(3)) }),
        ("tokens", Value::Array { item_type: ValueType::String, len: 5000, items: Some(strings(5000)) }),
        ("scores", Value::Array { item_type: ValueType::F32, len: 2000, items: Some(vec![Value::F32(0.5); 2000]) }),
    ];
    let tensors: Tensors = &[("a", &[32, 3], 0), ("b", &[64], 1), ("c", &[32, 2, 2, 2], 3)];
    let bytes = gguf(&metadata, tensors);
    let h = read_header(&bytes[..]).expect("reads");
    assert_eq!(h.version, 3);
    for (key, value) in &metadata[..13] {
        assert_eq!(h.get(key), Some(value), "{key}");
    }
    assert_eq!(h.get("tokens"), Some(&Value::Array { item_type: ValueType::String, len: 5000, items: None }));
    assert_eq!(h.get("scores"), Some(&Value::Array { item_type: ValueType::F32, len: 2000, items: None }));
    assert_eq!(h.tensors[2], TensorInfo { name: "c".into(), dims: vec![32, 2, 2, 2], ggml_type: 3 });
    assert_eq!(
        (h.get_str("str"), h.get_u64("u16"), h.get_u64("i8"), h.get_f32("f64")),
        (Some("héllo"), Some(700), None, Some(2.25))
    );
    // Layout: header padded to 32, then F32 384 + F16 128 + Q4_1 (8 blocks of 20) 160 bytes of data.
    assert_eq!(bytes.len() as u64, h.header_bytes.next_multiple_of(32) + 384 + 128 + 160);
}

#[test]
fn writes_and_reads_files() {
    let path = std::env::temp_dir().join(format!("wasmesh-gguf-test-{}.gguf", std::process::id()));
    let metadata = [("general.architecture", s("llama")), ("general.alignment", Value::U32(64))];
    write_gguf(&path, &metadata, &[("w", &[8, 8], 0), ("v", &[8], 0)]).expect("writes");
    let h = read_header_file(&path).expect("reads");
    let len = std::fs::metadata(&path).expect("exists").len();
    std::fs::remove_file(&path).ok();
    assert_eq!(len, h.header_bytes.next_multiple_of(64) + 256 + 64);
    let missing = read_header_file(&path).expect_err("gone");
    assert!(matches!(missing, GgufError::Open { .. }), "{missing}");
}

#[test]
fn model_facts_names_the_quantization() {
    let mut metadata = vec![("general.architecture", s("llama")), ("llama.context_length", Value::U32(8192))];
    let tensors: Tensors = &[("token_embd.weight", &[64, 10], 3), ("blk.0.attn_norm.weight", &[64], 0)];
    let facts = model_facts(&header(&metadata, tensors)).expect("facts");
    assert_eq!((facts.architecture.as_str(), facts.parameters), ("llama", 704));
    assert_eq!((facts.quantization.as_str(), facts.context_length), ("Q4_1", Some(8192)));
    metadata.push(("general.file_type", Value::U32(15)));
    assert_eq!(model_facts(&header(&metadata, tensors)).expect("facts").quantization, "Q4_K_M");
    let no_arch = model_facts(&header(&[], tensors)).expect_err("needs an architecture");
    assert!(matches!(no_arch, GgufError::MissingArchitecture), "{no_arch}");
    assert_eq!(
        (file_type_name(32), file_type_name(4), ggml_type_name(30), ggml_type_name(4)),
        (Some("BF16"), None, Some("BF16"), None)
    );
}

#[test]
fn rejects_files_that_are_not_gguf() {
    assert!(matches!(err(b""), GgufError::Empty));
    let elf = err(b"\x7fELF\x02\x01\x01").to_string();
    assert_eq!(elf, "not a GGUF file: it starts with '\\x7fELF' instead of 'GGUF'");
    assert!(err(b"<!DOCTYPE html>").to_string().contains("HTML page"));
    assert!(matches!(err(&raw(1, 0, 0, &[])), GgufError::UnsupportedVersion(1)));
    assert!(matches!(err(&raw(3 << 24, 0, 0, &[])), GgufError::UnsupportedVersion(_)));
}

#[test]
fn every_truncation_is_reported_and_never_panics() {
    let metadata = [
        ("general.architecture", s("llama")),
        ("ids", Value::Array { item_type: ValueType::I32, len: 2, items: Some(vec![Value::I32(1), Value::I32(2)]) }),
    ];
    let bytes = gguf(&metadata, &[("w", &[4, 4], 0)]);
    let header_bytes = read_header(&bytes[..]).expect("whole").header_bytes as usize;
    for cut in 4..header_bytes {
        let e = err(&bytes[..cut]);
        assert!(matches!(e, GgufError::Truncated { .. }), "cut at {cut}: {e}");
        assert!(e.to_string().starts_with("truncated GGUF header"), "{e}");
    }
    assert!(matches!(err(&bytes[..2]), GgufError::NotGguf { .. }));
}

#[test]
fn rejects_hostile_headers_without_allocating() {
    let too_many = err(&raw(3, u64::MAX, 0, &[]));
    assert!(matches!(too_many, GgufError::TooMany { what: "tensors", .. }), "{too_many}");
    assert!(matches!(err(&raw(3, 0, u64::MAX, &[])), GgufError::TooMany { .. }));
    // Counts under the caps but no bytes behind them: truncated, not an allocation of a million tensors.
    assert!(matches!(err(&raw(3, MAX_TENSORS, 0, &[])), GgufError::Truncated { .. }));

    let long_key = err(&raw(3, 0, 1, &u64::MAX.to_le_bytes()));
    assert!(matches!(long_key, GgufError::StringTooLong { offset: 24, len: u64::MAX }), "{long_key}");

    let kv = |ty: u32, rest: &[u8]| [raw_str("k"), ty.to_le_bytes().to_vec(), rest.to_vec()].concat();
    assert!(matches!(err(&raw(3, 0, 1, &kv(13, &[]))), GgufError::BadValueType { type_id: 13, .. }));
    assert!(matches!(err(&raw(3, 0, 1, &kv(9, &9u32.to_le_bytes()))), GgufError::NestedArray { .. }));
    let huge_array = [4u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat();
    assert!(matches!(err(&raw(3, 0, 1, &kv(9, &huge_array))), GgufError::TooMany { what: "array items", .. }));
    let big_array = [4u32.to_le_bytes().to_vec(), MAX_ARRAY_LEN.to_le_bytes().to_vec()].concat();
    // An array of 2^24 u32 is 64 MiB: past the whole header's cap before any read.
    assert!(matches!(err(&raw(3, 0, 1, &kv(9, &big_array))), GgufError::TooMany { what: "header bytes", .. }));
    let short_array = [4u32.to_le_bytes().to_vec(), 1000u64.to_le_bytes().to_vec()].concat();
    assert!(matches!(err(&raw(3, 0, 1, &kv(9, &short_array))), GgufError::Truncated { .. }));
    let twice = [kv(7, &[1]), kv(7, &[0])].concat();
    assert!(matches!(err(&raw(3, 0, 2, &twice)), GgufError::DuplicateKey { .. }));

    let tensor = |name: &str, dims: &[u64]| {
        let mut out = raw_str(name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend([0; 12]);
        out
    };
    let five = err(&raw(3, 1, 0, &tensor("t", &[1; 5])));
    assert_eq!(five.to_string(), "tensor 't' has 5 dimensions; GGUF allows at most 4");
    assert!(matches!(err(&raw(3, 1, 0, &tensor("t", &[1 << 32, 1 << 32]))), GgufError::TensorTooLarge { .. }));
    let dup = [tensor("t", &[1]), tensor("t", &[2])].concat();
    assert!(matches!(err(&raw(3, 2, 0, &dup)), GgufError::DuplicateTensor { .. }));

    // Each string under its cap, their sum over the header's: refused before the
    // header's bytes pass MAX_HEADER_BYTES.
    let value = "x".repeat(MAX_STRING_LEN as usize);
    let n = MAX_HEADER_BYTES / MAX_STRING_LEN + 2;
    let mut many = Vec::new();
    for i in 0..n {
        many.extend(raw_str(&format!("k{i}")));
        many.extend(8u32.to_le_bytes());
        many.extend(raw_str(&value));
    }
    let big = err(&raw(3, 0, n, &many));
    assert!(matches!(big, GgufError::TooMany { what: "header bytes", .. }), "{big}");
}

const BASE: Tensors = &[("blk.0.attn_q.weight", &[64, 64], 3), ("blk.0.ffn_up.weight", &[64, 128], 3)];

fn base() -> Header {
    header(&[("general.architecture", s("llama")), ("general.type", s("model"))], BASE)
}

fn adapter(arch: &str, tensors: Tensors) -> Header {
    let metadata = [
        ("general.architecture", s(arch)),
        ("general.type", s("adapter")),
        ("adapter.type", s("lora")),
        ("adapter.lora.alpha", Value::F32(16.0)),
    ];
    header(&metadata, tensors)
}

const GOOD: Tensors = &[
    ("blk.0.attn_q.weight.lora_a", &[64, 8], 0),
    ("blk.0.attn_q.weight.lora_b", &[8, 64], 0),
    ("blk.0.ffn_up.weight.lora_a", &[64, 8], 0),
    ("blk.0.ffn_up.weight.lora_b", &[8, 128], 0),
];

#[test]
fn a_good_lora_fits() {
    let lora = adapter("llama", GOOD);
    assert!(is_adapter(&lora) && !is_adapter(&base()));
    let facts = check_lora(&base(), &lora).expect("fits");
    assert_eq!(facts, LoraFacts { rank: 8, tensors: 2, alpha: Some(16.0) });
    // The same check from the base's tensor list kept as JSON.
    let json = serde_json::to_string(&base().tensors).expect("json");
    let tensors: Vec<TensorInfo> = serde_json::from_str(&json).expect("json");
    assert_eq!(check_lora_against("llama", &tensors, &lora), Ok(facts));
    // token_embd's A and B are swapped, as in llama.cpp.
    let embd: Tensors = &[("token_embd.weight.lora_a", &[4, 1000], 0), ("token_embd.weight.lora_b", &[4, 64], 0)];
    let base_embd = [TensorInfo { name: "token_embd.weight".into(), dims: vec![64, 1000], ggml_type: 0 }];
    assert_eq!(check_lora_against("llama", &base_embd, &adapter("llama", embd)).map(|f| f.rank), Ok(4));
}

#[test]
fn lora_mismatches_are_named() {
    let base = base();
    let check = |lora: &Header| check_lora(&base, lora).expect_err("must not fit");

    let e = check(&adapter("qwen2", GOOD));
    assert!(
        e.to_string()
            .starts_with("this adapter was made for a different model: its general.architecture is 'qwen2' but")
    );

    let wrong: Tensors = &[("blk.0.attn_q.weight.lora_a", &[32, 8], 0), ("blk.0.attn_q.weight.lora_b", &[8, 64], 0)];
    let e = check(&adapter("llama", wrong));
    assert!(matches!(&e, LoraMismatch::Shape { name, a, .. } if name == "blk.0.attn_q.weight" && a == &[32, 8]));
    assert!(e.to_string().contains("is [64, 64] in the base model, but the adapter's lora_a is [32, 8]"), "{e}");

    let e = check(&adapter("llama", &GOOD[..3]));
    assert_eq!(
        e,
        LoraMismatch::Unpaired {
            present: "blk.0.ffn_up.weight.lora_a".into(),
            missing: "blk.0.ffn_up.weight.lora_b".into()
        }
    );

    let ranks: Tensors =
        &[GOOD[0], GOOD[1], ("blk.0.ffn_up.weight.lora_a", &[64, 4], 0), ("blk.0.ffn_up.weight.lora_b", &[4, 128], 0)];
    assert!(matches!(check(&adapter("llama", ranks)), LoraMismatch::MixedRank { first_rank: 8, rank: 4, .. }));

    let missing: Tensors = &[("blk.9.attn_q.weight.lora_a", &[64, 8], 0), ("blk.9.attn_q.weight.lora_b", &[8, 64], 0)];
    assert_eq!(check(&adapter("llama", missing)), LoraMismatch::MissingBaseTensor("blk.9.attn_q.weight".into()));

    assert_eq!(check(&base), LoraMismatch::NotAnAdapter("'model'".into()));
    let not_lora = header(&[("general.type", s("adapter")), ("adapter.type", s("control_vector"))], &[]);
    assert_eq!(check(&not_lora), LoraMismatch::NotLora("'control_vector'".into()));
    let odd = check(&adapter("llama", &[GOOD[0], GOOD[1], ("blk.0.attn_q.weight", &[64, 64], 0)]));
    assert!(matches!(odd, LoraMismatch::UnexpectedTensor { .. }), "{odd}");
    assert_eq!(check(&adapter("llama", &[("output_norm.weight", &[64], 0)])), LoraMismatch::Empty);
}
