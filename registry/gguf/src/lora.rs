//! Whether a LoRA adapter fits a base model, by llama.cpp's own rules (`llama-adapter.cpp`).

use std::collections::{BTreeMap, HashMap};

use crate::{Header, TensorInfo};

/// What a LoRA adapter that fits its base model looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFacts {
    /// The rank shared by every pair of LoRA tensors.
    pub rank: u64,
    /// How many base tensors the adapter changes (one `lora_a`/`lora_b` pair each).
    pub tensors: usize,
    /// `adapter.lora.alpha`, when the adapter says (llama.cpp scales by `alpha / rank`).
    pub alpha: Option<f32>,
}

/// Why a LoRA adapter does not fit a base model. Shapes are in ggml order, as GGUF stores them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LoraMismatch {
    /// `general.type` is not `adapter` (probably a model pushed as a LoRA); holds it quoted, or `missing`.
    #[error("not a LoRA adapter: its general.type is {0} instead of 'adapter'; push models as models")]
    NotAnAdapter(String),
    /// `adapter.type` is not `lora` (e.g. a control vector); holds it quoted, or `missing`.
    #[error("not a LoRA adapter: its adapter.type is {0} instead of 'lora'")]
    NotLora(String),
    /// The base model's header has no `general.architecture`.
    #[error("the base model's GGUF header has no general.architecture, so no adapter can be checked against it")]
    BaseWithoutArchitecture,
    /// The adapter was made for another architecture.
    #[error(
        "this adapter was made for a different model: its general.architecture is {adapter} but the base \
         model's is '{base}'; push it against the base model it was trained on"
    )]
    Architecture {
        /// The adapter's architecture, quoted, or `missing`.
        adapter: String,
        /// The base model's.
        base: String,
    },
    /// The adapter has no LoRA tensors at all.
    #[error("the adapter has no LoRA tensors (none named '*.lora_a' or '*.lora_b'); the file is not a usable LoRA")]
    Empty,
    /// A tensor (named) whose name does not end in `.lora_a` or `.lora_b`.
    #[error("the adapter's tensor '{0}' is not a LoRA tensor: names must end in '.lora_a' or '.lora_b'")]
    UnexpectedTensor(String),
    /// A tensor (named) that appears twice.
    #[error("the adapter has tensor '{0}' twice; the file is damaged")]
    Duplicate(String),
    /// Half of a `lora_a`/`lora_b` pair.
    #[error("the adapter has '{present}' but no '{missing}': LoRA tensors come in pairs; the file is damaged")]
    Unpaired {
        /// The tensor it has.
        present: String,
        /// The one it lacks.
        missing: String,
    },
    /// The adapter changes a tensor (named) that the base model does not have.
    #[error(
        "this adapter was made for a different model: it changes tensor '{0}', which the base model does not \
         have; push it against the base model it was trained on"
    )]
    MissingBaseTensor(String),
    /// A pair whose shapes do not fit the base tensor.
    #[error(
        "this adapter was made for a different model: tensor '{name}' is {base:?} in the base model, but the \
         adapter's lora_a is {a:?} and lora_b is {b:?} (for a base tensor [n_in, n_out], lora_a must be \
         [n_in, rank] and lora_b [rank, n_out]); push it against the base model it was trained on"
    )]
    Shape {
        /// The base tensor's name.
        name: String,
        /// Its dims.
        base: Vec<u64>,
        /// `lora_a`'s dims.
        a: Vec<u64>,
        /// `lora_b`'s dims.
        b: Vec<u64>,
    },
    /// Pairs of different ranks.
    #[error(
        "the adapter's tensors have different ranks: '{first}' has rank {first_rank} but '{name}' has rank {rank}; \
         the file is damaged"
    )]
    MixedRank {
        /// The first pair's base tensor.
        first: String,
        /// Its rank.
        first_rank: u64,
        /// The offending pair's base tensor.
        name: String,
        /// Its rank.
        rank: u64,
    },
}

/// Checks that `adapter` is a LoRA adapter that llama.cpp would apply to `base`.
pub fn check_lora(base: &Header, adapter: &Header) -> Result<LoraFacts, LoraMismatch> {
    let arch = base.get_str("general.architecture").ok_or(LoraMismatch::BaseWithoutArchitecture)?;
    check_lora_against(arch, &base.tensors, adapter)
}

/// [`check_lora`] for a caller that kept only the base model's architecture and tensor list.
///
/// Mirrors llama.cpp: every tensor is `X.lora_a` or `X.lora_b` (tensors ending in `_norm.weight` are
/// ignored, as llama.cpp does), in pairs, and the base has `X`. With ggml dims, `a.dims[0]` must equal
/// `X.dims[0]`, `b.dims[1]` must equal `X.dims[1]`, and `a.dims[1] == b.dims[0]` is the rank; for
/// `token_embd.weight` A and B are swapped (`b.dims[1] == X.dims[0]`, `a.dims[1] == X.dims[1]`, rank
/// `a.dims[0] == b.dims[0]`). All pairs must share one rank. The first offending tensor, in name
/// order, is reported.
pub fn check_lora_against(
    base_arch: &str,
    base_tensors: &[TensorInfo],
    adapter: &Header,
) -> Result<LoraFacts, LoraMismatch> {
    let quoted = |key: &str| adapter.get_str(key).map_or_else(|| "missing".to_owned(), |s| format!("'{s}'"));
    if adapter.get_str("general.type") != Some("adapter") {
        return Err(LoraMismatch::NotAnAdapter(quoted("general.type")));
    }
    if adapter.get_str("adapter.type") != Some("lora") {
        return Err(LoraMismatch::NotLora(quoted("adapter.type")));
    }
    if adapter.get_str("general.architecture") != Some(base_arch) {
        return Err(LoraMismatch::Architecture { adapter: quoted("general.architecture"), base: base_arch.to_owned() });
    }

    let mut pairs = BTreeMap::<&str, [Option<&TensorInfo>; 2]>::new();
    for t in &adapter.tensors {
        let (target, slot) = if let Some(target) = t.name.strip_suffix(".lora_a") {
            (target, 0)
        } else if let Some(target) = t.name.strip_suffix(".lora_b") {
            (target, 1)
        } else if t.name.ends_with("_norm.weight") {
            continue;
        } else {
            return Err(LoraMismatch::UnexpectedTensor(t.name.clone()));
        };
        if pairs.entry(target).or_default()[slot].replace(t).is_some() {
            return Err(LoraMismatch::Duplicate(t.name.clone()));
        }
    }
    if pairs.is_empty() {
        return Err(LoraMismatch::Empty);
    }

    let base: HashMap<&str, &TensorInfo> = base_tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let ne = |t: &TensorInfo, i: usize| t.dims.get(i).copied().unwrap_or(1);
    let mut first: Option<(&str, u64)> = None;
    for (&name, pair) in &pairs {
        let (a, b) = match *pair {
            [Some(a), Some(b)] => (a, b),
            [Some(_), None] => return Err(unpaired(name, "lora_a", "lora_b")),
            _ => return Err(unpaired(name, "lora_b", "lora_a")),
        };
        let w = base.get(name).ok_or_else(|| LoraMismatch::MissingBaseTensor(name.to_owned()))?;
        let (fits, rank) = if name.ends_with("token_embd.weight") {
            (ne(w, 0) == ne(b, 1) && ne(w, 1) == ne(a, 1) && ne(a, 0) == ne(b, 0), ne(a, 0))
        } else {
            (ne(w, 0) == ne(a, 0) && ne(w, 1) == ne(b, 1) && ne(a, 1) == ne(b, 0), ne(a, 1))
        };
        if !fits {
            let name = name.to_owned();
            return Err(LoraMismatch::Shape { name, base: w.dims.clone(), a: a.dims.clone(), b: b.dims.clone() });
        }
        match first {
            None => first = Some((name, rank)),
            Some((first, first_rank)) if first_rank != rank => {
                let (first, name) = (first.to_owned(), name.to_owned());
                return Err(LoraMismatch::MixedRank { first, first_rank, name, rank });
            }
            Some(_) => {}
        }
    }
    Ok(LoraFacts {
        rank: first.map_or(0, |(_, rank)| rank),
        tensors: pairs.len(),
        alpha: adapter.get_f32("adapter.lora.alpha"),
    })
}

fn unpaired(name: &str, present: &str, missing: &str) -> LoraMismatch {
    LoraMismatch::Unpaired { present: format!("{name}.{present}"), missing: format!("{name}.{missing}") }
}
