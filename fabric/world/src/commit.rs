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

/// The seeds of a request's sampled generations that name none: the router's seed
/// for the request mixed with each generation's place in it, so a replay of the request
/// with the same seed samples the same tokens. Greedy generations and those that name a
/// seed are left as they are (each still takes its place in the count).
#[derive(Clone, Copy, Default)]
pub struct RequestSeed {
    seed: u64,
    next: u32,
}

impl RequestSeed {
    /// The seeds of a request the router gave `seed` (0: none, the engine picks), for
    /// one interface (`domain`: `nn` or `llm`, so the two never share seeds).
    pub fn new(seed: u64, domain: &str) -> Self {
        let seed = if seed == 0 {
            0
        } else {
            seed ^ u64::from_le_bytes(blake3::hash(domain.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"))
        };
        Self { seed, next: 0 }
    }

    /// Fills in the seed of the request's next generation, if it samples and names none.
    pub fn apply(&mut self, params: &mut wasmesh_engine::GenerateParams) {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        if self.seed == 0 || params.is_greedy() || params.seed != u32::MAX {
            return;
        }
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&n.to_le_bytes());
        let derived = u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"));
        // u32::MAX asks the engine for a random seed.
        params.seed = derived.min(u32::MAX - 1);
    }
}

/// What makes a request's generations replayable, by the order they start: the seeds of
/// its sampled ones (the router's request seed), the token ids each produced, which the
/// host returns to a router that meters the request, and the ids an audit's replay was
/// given to check: each generation of the replay checks the claim in its place
/// (`GenerateRequest::forced`, teacher-forced) rather than generating.
#[derive(Clone, Default)]
pub struct Replay {
    seed: RequestSeed,
    claims: Vec<std::sync::Arc<[i32]>>,
    /// Score the claims rather than check them (`GenerateRequest::score`).
    score_claims: bool,
    produced: Vec<Vec<i32>>,
    score: Option<wasmesh_api::wire::ClaimScore>,
}

impl Replay {
    /// Seeds the sampled generations that name no seed from the router's request `seed`
    /// (0: none), for one interface (`domain`: `nn` or `llm`).
    pub fn set_seed(&mut self, seed: u64, domain: &str) {
        self.seed = RequestSeed::new(seed, domain);
    }

    /// Check `claims` (by the order generations start) rather than generate them; with
    /// `score`, take them as they are and score them (an auditor of another engine build
    /// or CPU class).
    pub fn set_claims(&mut self, claims: Vec<std::sync::Arc<[i32]>>, score: bool) {
        self.claims = claims;
        self.score_claims = score;
    }

    /// A generation starts: it gets its seed, and checks the claim in its place if there
    /// is one. Its place.
    pub fn start(&mut self, request: &mut GenerateRequest) -> usize {
        self.seed.apply(&mut request.params);
        let at = self.produced.len();
        if let Some(claim) = self.claims.get(at) {
            request.forced = Some(claim.clone());
            request.score = self.score_claims;
        }
        self.produced.push(Vec::new());
        at
    }

    /// The generation started at `at` produced `generation`.
    pub fn done(&mut self, at: usize, generation: &Generation) {
        if let Some(slot) = self.produced.get_mut(at) {
            slot.clone_from(&generation.tokens);
        }
        if let Some(score) = &generation.score {
            self.score.get_or_insert_with(Default::default).add(score);
        }
    }

    /// The scores of its scored generations, summed (none: nothing was scored).
    pub fn score(&self) -> Option<wasmesh_api::wire::ClaimScore> {
        self.score
    }

    /// The token ids of each generation, by the order they started (empty: none, or failed).
    pub fn produced(&self) -> &[Vec<i32>] {
        &self.produced
    }
}

/// A request's running commitment. Its hasher (about 1.9 KB) is boxed: every request's
/// store holds two commitments (`wasi:nn`'s and Spin's), most of them never used, and
/// inline they were four fifths of the store's state, moved about on every request.
#[derive(Clone, Default)]
pub struct Commitment(Option<Box<blake3::Hasher>>);

impl Commitment {
    /// Adds one generation of the request whose digest is `asked`.
    pub fn add(&mut self, asked: &blake3::Hash, generation: &Generation) {
        let h = self.0.get_or_insert_with(Box::default);
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
            let h = self.0.get_or_insert_with(Box::default);
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
            score: None,
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
        // The router's seed fills in sampled generations that name none, the same on a replay.
        let sampled = || GenerateParams { temp: 0.8, ..GenerateParams::default() };
        let (mut a, mut b, mut other) =
            (RequestSeed::new(7, "nn"), RequestSeed::new(7, "nn"), RequestSeed::new(8, "nn"));
        let (mut pa, mut pb, mut po) = (sampled(), sampled(), sampled());
        a.apply(&mut pa);
        b.apply(&mut pb);
        other.apply(&mut po);
        assert_eq!(pa.seed, pb.seed);
        assert_ne!(pa.seed, u32::MAX);
        assert_ne!(pa.seed, po.seed);
        let mut second = sampled();
        a.apply(&mut second);
        assert_ne!(second.seed, pa.seed, "each generation of a request has its own seed");
        let mut named = GenerateParams { seed: 42, ..sampled() };
        a.apply(&mut named);
        assert_eq!(named.seed, 42);
        let mut none = sampled();
        RequestSeed::new(0, "nn").apply(&mut none);
        assert_eq!(none.seed, u32::MAX);
        assert_ne!(base, commit(vec![1, 2, 4], FinishReason::Length), "another token");
        assert_ne!(base, commit(vec![1, 2, 3], FinishReason::Stop), "another ending");
        let seeded = GenerateParams { seed: 7, ..Default::default() };
        assert_ne!(asked, request_digest(&GenerateRequest::new("m", "hi", seeded)), "the seed is part of the ask");
        assert_ne!(asked, request_digest(&GenerateRequest::new("m2", "hi", GenerateParams::default())));
        assert!(Commitment::default().hex().is_none(), "nothing generated: no commitment");
    }
}
