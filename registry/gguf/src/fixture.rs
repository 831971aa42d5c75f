//! A small GGUF v3 writer, for tests and for callers that need a fixture file.
//!
//! It writes the header, the metadata, the tensor infos with offsets aligned to `general.alignment`
//! (32 unless the metadata sets it as a `U32`), then zero-filled tensor data, each tensor padded to
//! the alignment: the layout llama.cpp's `gguf_init_from_file` accepts.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::{Value, ValueType};

/// A metadata value to write: any [`Value`]; arrays must carry their items.
pub type FixtureValue = Value;

/// Writes a GGUF v3 file at `path`. Each tensor is `(name, dims in ggml order, ggml type)`; its data
/// is zeros. Supported types: F32 (0, the one to use), F16 (1), Q4_0 (2), Q4_1 (3), Q8_0 (8), BF16 (30).
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(&str, FixtureValue)],
    tensors: &[(&str, &[u64], u32)],
) -> io::Result<()> {
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    write_gguf_to(&mut file, metadata, tensors)?;
    file.flush()
}

/// [`write_gguf`] into any writer, e.g. a `Vec<u8>`.
pub fn write_gguf_to(
    mut out: impl Write,
    metadata: &[(&str, FixtureValue)],
    tensors: &[(&str, &[u64], u32)],
) -> io::Result<()> {
    let alignment = match metadata.iter().find(|(key, _)| *key == "general.alignment") {
        None => 32,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some(_) => return Err(invalid("general.alignment must be a U32 power of two".to_owned())),
    };
    let sizes = tensors.iter().map(|&(name, dims, ty)| data_size(name, dims, ty)).collect::<io::Result<Vec<_>>>()?;

    let mut w = Counting { out: &mut out, written: 0 };
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata {
        write_str(&mut w, key)?;
        w.write_all(&value.value_type().id().to_le_bytes())?;
        write_value(&mut w, value)?;
    }
    let mut offset = 0u64;
    for (&(name, dims, ty), size) in tensors.iter().zip(&sizes) {
        write_str(&mut w, name)?;
        w.write_all(&(dims.len() as u32).to_le_bytes())?;
        for d in dims {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&ty.to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offset += size.next_multiple_of(alignment);
    }
    let pad = w.written.next_multiple_of(alignment) - w.written;
    for size in std::iter::once(pad).chain(sizes.iter().map(|s| s.next_multiple_of(alignment))) {
        io::copy(&mut io::repeat(0).take(size), &mut w)?;
    }
    Ok(())
}

/// Bytes of one tensor's data.
fn data_size(name: &str, dims: &[u64], ty: u32) -> io::Result<u64> {
    // (elements per block, bytes per block), from ggml's type traits.
    let (block, bytes) = match ty {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        8 => (32, 34),
        _ => return Err(invalid(format!("tensor '{name}': the fixture writer cannot size ggml type {ty}"))),
    };
    if dims.is_empty() || dims.len() > 4 || !dims[0].is_multiple_of(block) {
        return Err(invalid(format!("tensor '{name}': dims {dims:?} do not suit ggml type {ty}")));
    }
    let elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    elements.map(|n| n / block * bytes).ok_or_else(|| invalid(format!("tensor '{name}' is too large")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::U8(v) => w.write_all(&v.to_le_bytes()),
        Value::I8(v) => w.write_all(&v.to_le_bytes()),
        Value::U16(v) => w.write_all(&v.to_le_bytes()),
        Value::I16(v) => w.write_all(&v.to_le_bytes()),
        Value::U32(v) => w.write_all(&v.to_le_bytes()),
        Value::I32(v) => w.write_all(&v.to_le_bytes()),
        Value::F32(v) => w.write_all(&v.to_le_bytes()),
        Value::Bool(v) => w.write_all(&[u8::from(*v)]),
        Value::String(s) => write_str(w, s),
        Value::U64(v) => w.write_all(&v.to_le_bytes()),
        Value::I64(v) => w.write_all(&v.to_le_bytes()),
        Value::F64(v) => w.write_all(&v.to_le_bytes()),
        Value::Array { item_type, items: Some(items), .. } => {
            if *item_type == ValueType::Array || items.iter().any(|v| v.value_type() != *item_type) {
                return Err(invalid(format!("array items must all be {item_type:?}, and not arrays")));
            }
            w.write_all(&item_type.id().to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|v| write_value(w, v))
        }
        Value::Array { items: None, .. } => Err(invalid("an array to write must carry its items".to_owned())),
    }
}

/// Counts the bytes written, to pad the header to the alignment.
struct Counting<W> {
    out: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
