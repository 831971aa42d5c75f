//! Compaction: moving a busy sequence down into a freed slot so the busy slots stay
//! consecutive, and the threshold of tokens left at which that move pays.

use super::scheduler::Scheduler;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use std::sync::atomic::Ordering;

/// Bytes one KV cell takes across all layers: keys and values of the KV heads, f16
/// (llama.cpp's default cache type, which the engine keeps).
pub(crate) fn kv_bytes_per_cell(model: &LlamaModel) -> u64 {
    let (layers, embd) = (u64::from(model.n_layer()), model.n_embd().max(0) as u64);
    let (heads, kv_heads) = (u64::from(model.n_head().max(1)), u64::from(model.n_head_kv()));
    layers * 2 * (embd * kv_heads / heads) * 2
}

/// How many tokens a sequence must have left before compaction moves it: moving
/// copies its whole KV stream (`stream_bytes`) and saves about one pass over the
/// weights (`model_bytes`) on each step it has left. Both are memory-bound, so the
/// move pays once the passes saved outweigh the copy several times over: 4 tokens
/// where the stream is no larger than the weights (SmolLM2 at 4096 cells: 94 MB
/// against 97 MB), proportionally more for long contexts.
pub(crate) fn min_tokens_to_move(stream_bytes: u64, model_bytes: u64) -> usize {
    const MIN: u64 = 4;
    let scaled = (MIN * stream_bytes).div_ceil(model_bytes.max(1));
    usize::try_from(scaled.max(MIN)).unwrap_or(usize::MAX)
}

impl Scheduler<'_> {
    /// Keeps the busy slots' sequence ids consecutive: with a KV stream per slot,
    /// llama.cpp splits a step into one ubatch per run of consecutive ids, and each
    /// ubatch is a whole pass over the weights, so a request that ends early would
    /// cost the rest of its neighbours an extra pass on every step. The highest busy
    /// sequence moves into the lowest free slot instead (its KV stream is copied
    /// whole; cells keep their places, so its tokens do not change). Only sequences
    /// with at least `min_tokens_to_move` tokens left move (see [`min_tokens_to_move`]).
    pub(crate) fn compact(&mut self, ctx: &mut LlamaContext<'_>) {
        loop {
            let Some(hole) = self.slots.iter().position(Option::is_none) else { return };
            let Some(last) = self.slots.iter().rposition(Option::is_some) else { return };
            let worth_it =
                self.slots[last].as_ref().is_some_and(|a| a.n_predict - a.tokens.len() >= self.min_tokens_to_move);
            if last < hole || !worth_it {
                return;
            }
            if ctx.copy_kv_cache_seq(last as i32, hole as i32, None, None).is_err() {
                return;
            }
            let _ = ctx.kv_cache_seq_rm(last as i32, None, None);
            self.slots.swap(hole, last);
            self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compaction_waits_for_more_tokens_left_when_the_kv_stream_outweighs_the_model() {
        use super::min_tokens_to_move;
        const MB: u64 = 1 << 20;
        // SmolLM2 Q4_1 at 4096 cells per slot: a 90 MiB stream, 92 MiB of weights.
        assert_eq!(min_tokens_to_move(90 * MB, 92 * MB), 4);
        // Much less KV than weights (a big model with grouped-query attention).
        assert_eq!(min_tokens_to_move(1024 * MB, 4700 * MB), 4);
        // The same small model at 32 768 cells per slot: eight times the stream.
        assert_eq!(min_tokens_to_move(720 * MB, 92 * MB), 32);
        assert_eq!(min_tokens_to_move(10 * MB, 0), 40 * MB as usize, "no weights: never worth a copy in practice");
    }
}
