//! Choosing the next token: a request's sampler chain, and the in-place greedy pick.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use wasmesh_engine::GenerateParams;

/// The sampler chain for `params`: greedy when `temp` is 0 (deterministic).
pub(crate) fn build_sampler(model: &LlamaModel, params: &GenerateParams) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            params.repeat_last_n as i32,
            params.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if params.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        chain.push(LlamaSampler::top_k(params.top_k as i32));
        chain.push(LlamaSampler::top_p(params.top_p, 1));
        chain.push(LlamaSampler::temp(params.temp));
        chain.push(LlamaSampler::dist(params.seed));
    }
    if chain.len() == 1 { chain.pop().expect("one sampler") } else { LlamaSampler::chain_simple(chain) }
}

/// The token of the first largest logit: what llama.cpp's greedy sampler picks.
pub(crate) fn first_max(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, &logit) in logits.iter().enumerate().skip(1) {
        if logit > logits[best] {
            best = i;
        }
    }
    LlamaToken::new(best as i32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn greedy_picks_the_first_largest_logit_as_llama_cpp_does() {
        use super::first_max;
        assert_eq!(first_max(&[0.5, 2.0, 1.0, 2.0]).0, 1);
        assert_eq!(first_max(&[3.0, 2.0]).0, 0);
        assert_eq!(first_max(&[-1.0]).0, 0);
    }
}
