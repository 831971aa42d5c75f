//! [`ModelRef`]: a model, or a LoRA adapter on its base model, named `MODEL` or
//! `MODEL:ADAPTER`. The one place that text is parsed: manifests, requests, heartbeats,
//! the engine and the router all pass the typed value.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The longest key accepted, in bytes. Model and adapter names are short kebab-case words in the
/// registry; a cap keeps a bad heartbeat from growing the snapshot's index without bound.
pub const MAX_MODEL_REF_LEN: usize = 256;

/// A model, or a LoRA adapter on a base model: `MODEL` or `MODEL:ADAPTER`.
///
/// The key is the routing unit: nodes report what they hold per key, requests ask for one. An
/// adapter key names its base (`model()`), which is what costs memory and load time; the adapter
/// itself is small. Cloning is cheap (the text is shared).
///
/// ```
/// use wasmesh_api::ModelRef;
/// let key: ModelRef = "llama-3-8b:sql-helper".parse()?;
/// assert_eq!(key.model(), "llama-3-8b");
/// assert_eq!(key.adapter(), Some("sql-helper"));
/// # Ok::<(), wasmesh_api::ModelRefError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    full: Arc<str>,
}

impl ModelRef {
    /// A base model's key.
    ///
    /// # Errors
    /// [`ModelRefError`] when the name is empty, too long, or holds `:`, whitespace or a control character.
    pub fn new(model: &str) -> Result<Self, ModelRefError> {
        check_part(model, "model", model)?;
        check_len(model)?;
        Ok(Self { full: Arc::from(model) })
    }

    /// A LoRA adapter's key on its base model: `MODEL:ADAPTER`.
    ///
    /// # Errors
    /// [`ModelRefError`] when either name is empty or holds `:`, whitespace or a control character,
    /// or the key is too long.
    pub fn with_adapter(model: &str, adapter: &str) -> Result<Self, ModelRefError> {
        let full = format!("{model}:{adapter}");
        check_part(model, "model", &full)?;
        check_part(adapter, "adapter", &full)?;
        check_len(&full)?;
        Ok(Self { full: Arc::from(full) })
    }

    /// Parses `MODEL` or `MODEL:ADAPTER` (the form heartbeats use).
    ///
    /// # Errors
    /// [`ModelRefError`] as for [`ModelRef::new`] and [`ModelRef::with_adapter`]; a second `:` is an error.
    pub fn parse(key: &str) -> Result<Self, ModelRefError> {
        match key.split_once(':') {
            None => Self::new(key),
            Some((model, adapter)) => Self::with_adapter(model, adapter),
        }
    }

    /// The whole key, `MODEL` or `MODEL:ADAPTER`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The base model's name.
    pub fn model(&self) -> &str {
        Self::model_of(&self.full)
    }

    /// The base model's name in the text of a reference already checked (an index
    /// keyed by [`ModelRef::as_str`]): everything before the `:`, or all of it.
    pub fn model_of(text: &str) -> &str {
        text.split_once(':').map_or(text, |(model, _)| model)
    }

    /// The adapter's name, if this key names one.
    pub fn adapter(&self) -> Option<&str> {
        self.full.split_once(':').map(|(_, adapter)| adapter)
    }

    /// Whether this key names a LoRA adapter.
    pub fn is_adapter(&self) -> bool {
        self.full.contains(':')
    }

    /// The base model's key (itself when this is a base model).
    pub fn base(&self) -> ModelRef {
        if self.is_adapter() { Self { full: Arc::from(self.model()) } } else { self.clone() }
    }
}

fn check_part(part: &str, what: &'static str, key: &str) -> Result<(), ModelRefError> {
    if part.is_empty() {
        return Err(ModelRefError::Empty { part: what, key: key.to_owned() });
    }
    if let Some(ch) = part.chars().find(|c| *c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(ModelRefError::BadChar { part: what, key: key.to_owned(), ch });
    }
    Ok(())
}

fn check_len(full: &str) -> Result<(), ModelRefError> {
    if full.len() > MAX_MODEL_REF_LEN { Err(ModelRefError::TooLong { len: full.len() }) } else { Ok(()) }
}

impl FromStr for ModelRef {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Written as its text, `MODEL` or `MODEL:ADAPTER`.
impl serde::Serialize for ModelRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

/// Read from its text, checked as [`ModelRef::parse`] checks it.
impl<'de> serde::Deserialize<'de> for ModelRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelRef({:?})", &*self.full)
    }
}

/// Why a text is not a model reference.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelRefError {
    /// The model or adapter name is empty (`""`, `":x"`, `"x:"`).
    Empty {
        /// `"model"` or `"adapter"`.
        part: &'static str,
        /// The key as given.
        key: String,
    },
    /// A name holds a character keys cannot hold (`:` inside a name, whitespace, control).
    BadChar {
        /// `"model"` or `"adapter"`.
        part: &'static str,
        /// The key as given.
        key: String,
        /// The offending character.
        ch: char,
    },
    /// The key is longer than [`MAX_MODEL_REF_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for ModelRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRefError::Empty { part, key } => {
                write!(f, "model key '{key}' has an empty {part} name; write 'MODEL' or 'MODEL:ADAPTER'")
            }
            ModelRefError::BadChar { part, key, ch } => write!(
                f,
                "model key '{key}': the {part} name holds {ch:?}; names are words without ':' or spaces, \
                 and a key is 'MODEL' or 'MODEL:ADAPTER'"
            ),
            ModelRefError::TooLong { len } => {
                write!(f, "model key is {len} bytes long; at most {MAX_MODEL_REF_LEN} are accepted")
            }
        }
    }
}

impl std::error::Error for ModelRefError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parses_model_and_adapter() {
        let k = ModelRef::parse("llama").unwrap();
        assert_eq!((k.model(), k.adapter(), k.is_adapter()), ("llama", None, false));
        let k = ModelRef::parse("llama:sql").unwrap();
        assert_eq!((k.model(), k.adapter(), k.is_adapter()), ("llama", Some("sql"), true));
        assert_eq!(k.base(), ModelRef::new("llama").unwrap());
        assert_eq!(k.to_string(), "llama:sql");
        assert_eq!(ModelRef::with_adapter("llama", "sql").unwrap(), k);
    }

    #[test]
    fn key_rejects_bad_text_with_a_fix_it() {
        assert!(matches!(ModelRef::parse(""), Err(ModelRefError::Empty { part: "model", .. })));
        assert!(matches!(ModelRef::parse("a:"), Err(ModelRefError::Empty { part: "adapter", .. })));
        assert!(matches!(ModelRef::parse("a:b:c"), Err(ModelRefError::BadChar { ch: ':', .. })));
        assert!(matches!(ModelRef::parse("a b"), Err(ModelRefError::BadChar { ch: ' ', .. })));
        assert!(matches!(ModelRef::new(&"x".repeat(MAX_MODEL_REF_LEN + 1)), Err(ModelRefError::TooLong { .. })));
        let msg = ModelRef::parse("a:b:c").unwrap_err().to_string();
        assert!(msg.contains("'MODEL:ADAPTER'"), "{msg}");
    }
}
