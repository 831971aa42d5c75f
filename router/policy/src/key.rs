//! Model keys (`MODEL` or `MODEL:ADAPTER`) and where a node holds one ([`Warmth`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The longest key accepted, in bytes. Model and adapter names are short kebab-case words in the
/// registry; a cap keeps a bad heartbeat from growing the snapshot's index without bound.
pub const MAX_KEY_LEN: usize = 256;

/// A model, or a LoRA adapter on a base model, as heartbeats name them: `MODEL` or `MODEL:ADAPTER`.
///
/// The key is the routing unit: nodes report what they hold per key, requests ask for one. An
/// adapter key names its base (`model()`), which is what costs memory and load time; the adapter
/// itself is small. Cloning is cheap (the text is shared).
///
/// ```
/// use wasmesh_routing::ModelKey;
/// let key: ModelKey = "llama-3-8b:sql-helper".parse()?;
/// assert_eq!(key.model(), "llama-3-8b");
/// assert_eq!(key.adapter(), Some("sql-helper"));
/// # Ok::<(), wasmesh_routing::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    full: Arc<str>,
}

impl ModelKey {
    /// A base model's key.
    ///
    /// # Errors
    /// [`KeyError`] when the name is empty, too long, or holds `:`, whitespace or a control character.
    pub fn new(model: &str) -> Result<Self, KeyError> {
        check_part(model, "model", model)?;
        check_len(model)?;
        Ok(Self { full: Arc::from(model) })
    }

    /// A LoRA adapter's key on its base model: `MODEL:ADAPTER`.
    ///
    /// # Errors
    /// [`KeyError`] when either name is empty or holds `:`, whitespace or a control character,
    /// or the key is too long.
    pub fn with_adapter(model: &str, adapter: &str) -> Result<Self, KeyError> {
        let full = format!("{model}:{adapter}");
        check_part(model, "model", &full)?;
        check_part(adapter, "adapter", &full)?;
        check_len(&full)?;
        Ok(Self { full: Arc::from(full) })
    }

    /// Parses `MODEL` or `MODEL:ADAPTER` (the form heartbeats use).
    ///
    /// # Errors
    /// [`KeyError`] as for [`ModelKey::new`] and [`ModelKey::with_adapter`]; a second `:` is an error.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
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
        self.full.split_once(':').map_or(&*self.full, |(model, _)| model)
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
    pub fn base(&self) -> ModelKey {
        if self.is_adapter() { Self { full: Arc::from(self.model()) } } else { self.clone() }
    }
}

fn check_part(part: &str, what: &'static str, key: &str) -> Result<(), KeyError> {
    if part.is_empty() {
        return Err(KeyError::Empty { part: what, key: key.to_owned() });
    }
    if let Some(ch) = part.chars().find(|c| *c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(KeyError::BadChar { part: what, key: key.to_owned(), ch });
    }
    Ok(())
}

fn check_len(full: &str) -> Result<(), KeyError> {
    if full.len() > MAX_KEY_LEN { Err(KeyError::TooLong { len: full.len() }) } else { Ok(()) }
}

impl FromStr for ModelKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelKey({:?})", &*self.full)
    }
}

/// Why a text is not a model key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
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
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty { part, key } => {
                write!(f, "model key '{key}' has an empty {part} name; write 'MODEL' or 'MODEL:ADAPTER'")
            }
            KeyError::BadChar { part, key, ch } => write!(
                f,
                "model key '{key}': the {part} name holds {ch:?}; names are words without ':' or spaces, \
                 and a key is 'MODEL' or 'MODEL:ADAPTER'"
            ),
            KeyError::TooLong { len } => {
                write!(f, "model key is {len} bytes long; at most {MAX_KEY_LEN} are accepted")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Where a node holds a model key.
///
/// An adapter key counts as [`Warmth::Ram`] only while its base model is in RAM on the same node
/// too: [`Snapshot::build`](crate::Snapshot::build) lowers an adapter reported in RAM over a base
/// that is not to [`Warmth::Disk`] (a load away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Warmth {
    /// Loaded in RAM: a request runs at once.
    Ram,
    /// Being fetched or loaded: warm in a few seconds. The router may send a request there (it
    /// waits for the load), but never asks a second time for it to be pre-loaded.
    Loading,
    /// On the node's disk: a load away, no download.
    Disk,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parses_model_and_adapter() {
        let k = ModelKey::parse("llama").unwrap();
        assert_eq!((k.model(), k.adapter(), k.is_adapter()), ("llama", None, false));
        let k = ModelKey::parse("llama:sql").unwrap();
        assert_eq!((k.model(), k.adapter(), k.is_adapter()), ("llama", Some("sql"), true));
        assert_eq!(k.base(), ModelKey::new("llama").unwrap());
        assert_eq!(k.to_string(), "llama:sql");
        assert_eq!(ModelKey::with_adapter("llama", "sql").unwrap(), k);
    }

    #[test]
    fn key_rejects_bad_text_with_a_fix_it() {
        assert!(matches!(ModelKey::parse(""), Err(KeyError::Empty { part: "model", .. })));
        assert!(matches!(ModelKey::parse("a:"), Err(KeyError::Empty { part: "adapter", .. })));
        assert!(matches!(ModelKey::parse("a:b:c"), Err(KeyError::BadChar { ch: ':', .. })));
        assert!(matches!(ModelKey::parse("a b"), Err(KeyError::BadChar { ch: ' ', .. })));
        assert!(matches!(ModelKey::new(&"x".repeat(MAX_KEY_LEN + 1)), Err(KeyError::TooLong { .. })));
        let msg = ModelKey::parse("a:b:c").unwrap_err().to_string();
        assert!(msg.contains("'MODEL:ADAPTER'"), "{msg}");
    }
}
