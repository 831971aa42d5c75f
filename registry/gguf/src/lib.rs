//! Reads the header of a GGUF file (llama.cpp's model format) without touching its tensor data, and
//! answers two questions the registry asks of every upload: what model is this ([`model_facts`]), and
//! does this LoRA adapter fit that base model ([`check_lora`]).
//!
//! # GGUF layout (versions 2 and 3, little-endian)
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, value_type u32, value)
//!     string = len u64 + UTF-8 bytes; array = item_type u32 + len u64 + items (no arrays of arrays)
//! tensor_count × (name: string, n_dims u32, dims u64 × n_dims, ggml_type u32, offset u64)
//! padding to `general.alignment` (default 32), then the tensor data, each tensor at its offset
//! ```
//!
//! Dims are in ggml order: `dims[0]` is the row length (the fastest-moving index), the reverse of
//! numpy's shape. Only the part before the tensor data is read, so reading a header costs
//! milliseconds whatever the file's size. The reader distrusts its input: strings, arrays and counts
//! are capped, big arrays (a tokenizer's vocabulary) are skipped over and only their length kept, and
//! every failure is a [`GgufError`] that says what is wrong.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use wasmesh_api::wire::ModelFacts;

pub mod fixture;
mod lora;
#[cfg(test)]
mod tests;

pub use lora::{LoraFacts, LoraMismatch, check_lora, check_lora_against};

/// Longest string (key, value or tensor name) the reader accepts, in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 20;
/// Most items an array value may declare.
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Arrays with at most this many items keep their items; longer ones keep only their length.
pub const KEEP_ARRAY_ITEMS: u64 = 1024;
/// Most tensors a header may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata key/values a header may declare.
pub const MAX_KVS: u64 = 1 << 16;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Most bytes a whole header may take (every item is capped, and so is their sum: a
/// header of 65,536 strings of 1 MiB each is refused). The largest vocabularies take a
/// few MiB.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// The type of a metadata value, as numbered in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names say it all
#[rustfmt::skip]
pub enum ValueType { U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 }

impl ValueType {
    const ALL: [ValueType; 13] = {
        use ValueType::*;
        [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64]
    };

    /// The type with this number in the file, if there is one.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// Its number in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Size in bytes of one value, for the fixed-size types.
    fn size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // one variant per GGUF type, named after it
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array: its items' type, its length, and its items when it has at most
    /// [`KEEP_ARRAY_ITEMS`] of them (`None` for longer arrays, whose items are skipped).
    Array {
        item_type: ValueType,
        len: u64,
        items: Option<Vec<Value>>,
    },
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Array { .. } => ValueType::Array,
        }
    }

    /// The value as an unsigned integer, for any integer type holding a value ≥ 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// One tensor's description from the header (its data is not read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    /// Its name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Its dimensions in ggml order (`dims[0]` is the row length), at most [`MAX_DIMS`].
    pub dims: Vec<u64>,
    /// Its ggml type (see [`ggml_type_name`]).
    pub ggml_type: u32,
}

impl TensorInfo {
    /// Number of elements: the product of the dims (`None` on overflow).
    pub fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

/// A GGUF file's header: version, metadata and tensor descriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Format version, 2 or 3.
    pub version: u32,
    /// Metadata key/values, e.g. `general.architecture`.
    pub metadata: BTreeMap<String, Value>,
    /// The tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Bytes the header occupies: everything read, up to the alignment padding before the data.
    pub header_bytes: u64,
}

impl Header {
    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value of any integer type, if it is ≥ 0.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// A float value (an `F64` is narrowed to `f32`).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        match *self.get(key)? {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }
}

/// Why a GGUF header could not be read or described.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Reading failed for another reason than the end of the input.
    #[error("reading the GGUF header failed at byte {offset}: {source}")]
    Io {
        /// Where in the file.
        offset: u64,
        /// The read error (a truncated file ends here).
        source: io::Error,
    },
    /// The input is empty.
    #[error("not a GGUF file: it is empty")]
    Empty,
    /// The input does not start with the magic `GGUF`.
    #[error("not a GGUF file: it starts with '{found}' instead of 'GGUF'{hint}")]
    NotGguf {
        /// The first bytes, escaped.
        found: String,
        /// A guess at what the file is instead, or nothing.
        hint: &'static str,
    },
    /// The input ends inside the header.
    #[error("truncated GGUF header: the file ends at byte {offset} while reading {section}; is the download complete?")]
    Truncated {
        /// Where the read that failed started.
        offset: u64,
        /// What was being read.
        section: &'static str,
    },
    /// A version other than 2 or 3.
    #[error(
        "unsupported GGUF version {0}: only versions 2 and 3 are read (version 1 is obsolete, and a huge number \
         means a big-endian file); convert the model again with a current llama.cpp"
    )]
    UnsupportedVersion(u32),
    /// A count in the header is over this reader's cap.
    #[error("the GGUF header declares {count} {what}, more than the {max} allowed; the file is damaged or hostile")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// How many the file declares.
        count: u64,
        /// The cap.
        max: u64,
    },
    /// A string longer than [`MAX_STRING_LEN`].
    #[error("the GGUF header has a string of {len} bytes at byte {offset}, more than the {MAX_STRING_LEN} allowed")]
    StringTooLong {
        /// Where the string's length is.
        offset: u64,
        /// Its declared length.
        len: u64,
    },
    /// A metadata value or array item of a type GGUF does not define.
    #[error("metadata key '{key}' has unknown value type {type_id}; the file is damaged or from a newer GGUF")]
    BadValueType {
        /// The key.
        key: String,
        /// The type number found.
        type_id: u32,
    },
    /// An array of arrays, which GGUF does not allow; holds the key.
    #[error("metadata key '{0}' is an array of arrays, which GGUF does not allow")]
    NestedArray(String),
    /// A metadata key (held) that appears twice.
    #[error("metadata key '{0}' appears twice in the GGUF header")]
    DuplicateKey(String),
    /// A tensor with more than [`MAX_DIMS`] dimensions.
    #[error("tensor '{name}' has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Its declared number of dimensions.
        n_dims: u32,
    },
    /// A tensor whose element count does not fit in 63 bits.
    #[error("tensor '{name}' has dimensions {dims:?}, too many elements for any real tensor")]
    TensorTooLarge {
        /// The tensor.
        name: String,
        /// Its dims.
        dims: Vec<u64>,
    },
    /// A tensor name (held) that appears twice.
    #[error("tensor '{0}' appears twice in the GGUF header")]
    DuplicateTensor(String),
    /// No `general.architecture`, which llama.cpp needs to load a model.
    #[error("the GGUF header has no general.architecture, so llama.cpp cannot load it as a model")]
    MissingArchitecture,
}

/// Reads a GGUF header from the start of `reader`, leaving the tensor data unread. Pass a buffered
/// reader (or use [`read_header_file`]): values are read a few bytes at a time.
pub fn read_header(reader: impl Read) -> Result<Header, GgufError> {
    let mut r = Reader { inner: reader, pos: 0, section: "the magic number" };
    let mut magic = Vec::with_capacity(4);
    (&mut r.inner).take(4).read_to_end(&mut magic).map_err(|source| GgufError::Io { offset: 0, source })?;
    if magic.is_empty() {
        return Err(GgufError::Empty);
    }
    if magic != b"GGUF" {
        let hint = match magic.first() {
            Some(b'<') => " (it looks like an HTML page: was the download URL right?)",
            Some(b'{') => " (it looks like JSON)",
            _ if magic.starts_with(b"PK") => " (it looks like a zip archive)",
            _ => "",
        };
        return Err(GgufError::NotGguf { found: magic.escape_ascii().to_string(), hint });
    }
    r.pos = 4;
    r.section = "the header";
    let version = u32::from_le_bytes(r.bytes()?);
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = r.count("tensors", MAX_TENSORS)?;
    let kv_count = r.count("metadata key/values", MAX_KVS)?;

    r.section = "the metadata";
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let value = r.value(&key)?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.insert(key, value);
    }

    r.section = "the tensor infos";
    let mut tensors = Vec::with_capacity(tensor_count.min(4096) as usize);
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = u32::from_le_bytes(r.bytes()?);
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let dims = (0..n_dims).map(|_| Ok(u64::from_le_bytes(r.bytes()?))).collect::<Result<Vec<_>, GgufError>>()?;
        let ggml_type = u32::from_le_bytes(r.bytes()?);
        let _offset = u64::from_le_bytes(r.bytes::<8>()?);
        let tensor = TensorInfo { name, dims, ggml_type };
        if tensor.elements().is_none_or(|n| n > i64::MAX as u64) {
            return Err(GgufError::TensorTooLarge { name: tensor.name, dims: tensor.dims });
        }
        tensors.push(tensor);
    }
    let mut seen = HashSet::new();
    if let Some(t) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(GgufError::DuplicateTensor(t.name.clone()));
    }
    Ok(Header { version, metadata, tensors, header_bytes: r.pos })
}

/// Reads the header of the GGUF file at `path` (only the header: the tensor data is not read).
pub fn read_header_file(path: impl AsRef<Path>) -> Result<Header, GgufError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| GgufError::Open { path: path.to_owned(), source })?;
    read_header(BufReader::with_capacity(64 * 1024, file))
}

/// Counts bytes read and names the section being read, for error messages.
struct Reader<R> {
    inner: R,
    pos: u64,
    section: &'static str,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.within_cap(buf.len() as u64)?;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated()),
            Err(source) => Err(GgufError::Io { offset: self.pos, source }),
        }
    }

    fn truncated(&self) -> GgufError {
        GgufError::Truncated { offset: self.pos, section: self.section }
    }

    /// Refuses to read `n` more bytes when that takes the header past [`MAX_HEADER_BYTES`].
    fn within_cap(&self, n: u64) -> Result<(), GgufError> {
        let total = self.pos.saturating_add(n);
        if total > MAX_HEADER_BYTES {
            return Err(GgufError::TooMany { what: "header bytes", count: total, max: MAX_HEADER_BYTES });
        }
        Ok(())
    }

    /// Reads and discards `n` bytes.
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.within_cap(n)?;
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())
            .map_err(|source| GgufError::Io { offset: self.pos, source })?;
        self.pos += copied;
        if copied < n { Err(self.truncated()) } else { Ok(()) }
    }

    fn count(&mut self, what: &'static str, max: u64) -> Result<u64, GgufError> {
        let count = u64::from_le_bytes(self.bytes()?);
        if count > max {
            return Err(GgufError::TooMany { what, count, max });
        }
        Ok(count)
    }

    fn string_len(&mut self) -> Result<u64, GgufError> {
        let offset = self.pos;
        let len = u64::from_le_bytes(self.bytes()?);
        if len > MAX_STRING_LEN {
            return Err(GgufError::StringTooLong { offset, len });
        }
        Ok(len)
    }

    /// A string; bytes that are not UTF-8 become U+FFFD rather than an error, as llama.cpp does not check.
    fn string(&mut self) -> Result<String, GgufError> {
        let mut buf = vec![0; self.string_len()? as usize];
        self.fill(&mut buf)?;
        Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let type_id = u32::from_le_bytes(self.bytes()?);
        ValueType::from_id(type_id).ok_or_else(|| GgufError::BadValueType { key: key.to_owned(), type_id })
    }

    fn value(&mut self, key: &str) -> Result<Value, GgufError> {
        let ty = self.value_type(key)?;
        if ty != ValueType::Array {
            return self.scalar(ty, key);
        }
        let item_type = self.value_type(key)?;
        if item_type == ValueType::Array {
            return Err(GgufError::NestedArray(key.to_owned()));
        }
        let len = self.count("array items", MAX_ARRAY_LEN)?;
        if len <= KEEP_ARRAY_ITEMS {
            let items = (0..len).map(|_| self.scalar(item_type, key)).collect::<Result<_, _>>()?;
            return Ok(Value::Array { item_type, len, items: Some(items) });
        }
        match item_type.size() {
            Some(size) => self.skip(len * size)?,
            None => {
                for _ in 0..len {
                    let n = self.string_len()?;
                    self.skip(n)?;
                }
            }
        }
        Ok(Value::Array { item_type, len, items: None })
    }

    fn scalar(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.bytes()?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            ValueType::Bool => Value::Bool(self.bytes::<1>()? != [0]),
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.bytes()?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            ValueType::Array => return Err(GgufError::NestedArray(key.to_owned())),
        })
    }
}

/// The model facts the registry records: architecture, parameter count, quantization, context length.
///
/// The quantization is `general.file_type`'s name; when that key is absent or holds a number this crate
/// does not know, it is the ggml type that holds the most weights (e.g. `Q4_K`), or `unknown`.
pub fn model_facts(header: &Header) -> Result<ModelFacts, GgufError> {
    let architecture = header.get_str("general.architecture").ok_or(GgufError::MissingArchitecture)?;
    let parameters = header.tensors.iter().map(|t| t.elements().unwrap_or(u64::MAX)).fold(0u64, u64::saturating_add);
    let quantization = match header.get_u64("general.file_type").and_then(file_type_name) {
        Some(name) => name.to_owned(),
        None => dominant_tensor_type(&header.tensors),
    };
    Ok(ModelFacts {
        architecture: architecture.to_owned(),
        parameters,
        quantization,
        context_length: header.get_u64(&format!("{architecture}.context_length")),
    })
}

/// The name of the ggml type holding the most elements (ties go to the lower type number).
fn dominant_tensor_type(tensors: &[TensorInfo]) -> String {
    let mut by_type = BTreeMap::<u32, u64>::new();
    for t in tensors {
        *by_type.entry(t.ggml_type).or_default() += t.elements().unwrap_or(0);
    }
    let best = by_type.into_iter().rev().max_by_key(|&(_, n)| n);
    match best {
        Some((ty, _)) => ggml_type_name(ty).map_or_else(|| format!("ggml type {ty}"), str::to_owned),
        None => "unknown".to_owned(),
    }
}

/// Whether the header is an adapter's (`general.type` is `adapter`) rather than a model's.
pub fn is_adapter(header: &Header) -> bool {
    header.get_str("general.type") == Some("adapter")
}

/// The name of a `general.file_type` value (llama.cpp's `llama_ftype`, from `llama.h`), e.g. 15 → `Q4_K_M`.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    const NAMES: [&str; 39] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "",
        "",
        "",
        "Q8_0",
        "Q5_0",
        "Q5_1",
        "Q2_K",
        "Q3_K_S",
        "Q3_K_M",
        "Q3_K_L",
        "Q4_K_S",
        "Q4_K_M",
        "Q5_K_S",
        "Q5_K_M",
        "Q6_K",
        "IQ2_XXS",
        "IQ2_XS",
        "Q2_K_S",
        "IQ3_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ3_M",
        "IQ2_S",
        "IQ2_M",
        "IQ4_XS",
        "IQ1_M",
        "BF16",
        "",
        "",
        "",
        "TQ1_0",
        "TQ2_0",
        "MXFP4_MOE",
    ];
    NAMES.get(usize::try_from(file_type).ok()?).copied().filter(|name| !name.is_empty())
}

/// The name of a ggml tensor type (ggml's `ggml_type`, from `ggml.h`), e.g. 12 → `Q4_K`.
pub fn ggml_type_name(ggml_type: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32",
        "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0", "", "", "", "MXFP4",
    ];
    NAMES.get(usize::try_from(ggml_type).ok()?).copied().filter(|name| !name.is_empty())
}
