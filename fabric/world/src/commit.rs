//! What a request's generations commit to, for its receipt: for each generation in
//! order, a hash of what was asked (model, prompt, every option, the seed too) and the
//! token ids it produced, and why it ended. Two honest nodes of the same engine build
//! and CPU class give the same request the same commitment (the engine gives each
//! request exactly the tokens it gets alone), so an auditor that replays a request can
//! compare one hash; a node that substitutes a model, skips an adapter, or cuts a
//! generation short commits to something else.

use wasmesh_engine::{GenerateRequest, Generation};

/// A hash of what one generation was asked for.
pub fn request_digest(request: &GenerateRequest) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"wasmesh-generation-v1\0");
    h.update(request.model.as_bytes());
    h.update(&[0]);
    h.update(request.prompt.as_bytes());
    h.update(&[0]);
    h.update(&serde_json::to_vec(&request.params).expect("JSON of plain values"));
    h.finalize()
}

/// A request's running commitment.
#[derive(Clone, Default)]
pub struct Commitment(Option<blake3::Hasher>);

impl Commitment {
    /// Adds one generation of the request whose digest is `asked`.
    pub fn add(&mut self, asked: &blake3::Hash, generation: &Generation) {
        let h = self.0.get_or_insert_with(blake3::Hasher::new);
        h.update(asked.as_bytes());
        h.update(&(generation.tokens.len() as u64).to_le_bytes());
        for token in &generation.tokens {
            h.update(&token.to_le_bytes());
        }
        h.update(&[generation.finish as u8]);
    }

    /// Folds another interface's commitment into this one (nn first, then Spin's llm).
    pub fn and(mut self, other: &Commitment) -> Commitment {
        if let Some(theirs) = &other.0 {
            let h = self.0.get_or_insert_with(blake3::Hasher::new);
            h.update(theirs.finalize().as_bytes());
        }
        self
    }

    /// Lowercase hex, when the request generated anything.
    pub fn hex(&self) -> Option<String> {
        self.0.as_ref().map(|h| h.finalize().to_hex().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmesh_engine::{FinishReason, GenerateParams, Usage};

    fn generation(tokens: Vec<i32>, finish: FinishReason) -> Generation {
        Generation {
            text: String::new(),
            tokens,
            usage: Usage::default(),
            finish,
            fixed_cost: Default::default(),
            compute_time: Default::default(),
        }
    }

    #[test]
    fn the_same_request_and_tokens_commit_alike_and_any_change_differs() {
        let asked = request_digest(&GenerateRequest::new("m", "hi", GenerateParams::default()));
        let commit = |tokens: Vec<i32>, finish| {
            let mut c = Commitment::default();
            c.add(&asked, &generation(tokens, finish));
            c.hex().unwrap()
        };
        let base = commit(vec![1, 2, 3], FinishReason::Length);
        assert_eq!(base, commit(vec![1, 2, 3], FinishReason::Length));
        assert_ne!(base, commit(vec![1, 2], FinishReason::Length), "truncated");
        assert_ne!(base, commit(vec![1, 2, 4], FinishReason::Length), "another token");
        assert_ne!(base, commit(vec![1, 2, 3], FinishReason::Stop), "another ending");
        let seeded = GenerateParams { seed: 7, ..Default::default() };
        assert_ne!(asked, request_digest(&GenerateRequest::new("m", "hi", seeded)), "the seed is part of the ask");
        assert_ne!(asked, request_digest(&GenerateRequest::new("m2", "hi", GenerateParams::default())));
        assert!(Commitment::default().hex().is_none(), "nothing generated: no commitment");
    }
}
