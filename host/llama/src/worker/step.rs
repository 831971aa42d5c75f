//! The decode step: one batch for the active sequences, each with its own adapter
//! (or those of one adapter group, in rotation mode), generating tokens first, then
//! prompt chunks; sampling each sequence's next token, and freeing slots as requests
//! finish.

use super::sampling::first_max;
use super::scheduler::Scheduler;
use super::stop::find_stop;
use llama_cpp_2::context::LlamaContext;
use std::sync::atomic::Ordering;
use std::time::Instant;
use wasmesh_engine::{EngineError, FinishReason, Generation, Usage};

impl Scheduler<'_> {
    /// One decode step for the active sequences (of one adapter group in rotation mode).
    pub(crate) fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        self.batch.clear();
        let (group, ready) = self.prepare_adapters(ctx);
        let runs = |a: &super::slot::Active| group.is_none_or(|g| a.lora == g);
        if let Err(message) = ready {
            for seq in 0..self.slots.len() {
                if self.slots[seq].as_ref().is_some_and(runs) {
                    let a = self.slots[seq].take().expect("checked");
                    self.stats.active.fetch_sub(1, Ordering::Relaxed);
                    let _ = a.reply.send(Err(EngineError::Internal(message.clone())));
                    let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
                }
            }
            return;
        }
        let mut budget = self.n_batch;
        // Whether the batch carries more than one adapter key.
        let (mut first_key, mut mixed) = (None, false);
        let mut note = |key: super::lora::LoraKey| match first_key {
            None => first_key = Some(key),
            Some(first) => mixed |= first != key,
        };
        // Generating sequences first, one token each: running streams never stall
        // behind a long prompt.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            a.logits_at = None;
            if !runs(a) {
                continue;
            }
            if let Some(token) = a.pending.take() {
                a.logits_at = Some(self.batch.n_tokens());
                note(a.lora);
                self.batch.add(token, a.pos as i32, &[seq as i32], true).expect("batch has room");
                a.pos += 1;
                budget -= 1;
            }
        }
        // Then prompt chunks, in slot order, as far as the batch has room.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            if !runs(a) || a.prefilled == a.prompt.len() || budget == 0 {
                continue;
            }
            let take = (a.prompt.len() - a.prefilled).min(budget);
            note(a.lora);
            for i in a.prefilled..a.prefilled + take {
                let last = i + 1 == a.prompt.len();
                if last {
                    a.logits_at = Some(self.batch.n_tokens());
                }
                self.batch.add(a.prompt[i], a.pos as i32, &[seq as i32], last).expect("batch has room");
                a.pos += 1;
            }
            a.prefilled += take;
            budget -= take;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        if mixed {
            self.stats.mixed_lora_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.batched_tokens.fetch_add(self.batch.n_tokens() as u64, Ordering::Relaxed);
        if let Err(e) = ctx.decode(&mut self.batch) {
            let message = format!("decode failed: {e}");
            for seq in 0..self.slots.len() {
                if let Some(a) = self.slots[seq].take() {
                    self.stats.active.fetch_sub(1, Ordering::Relaxed);
                    let _ = a.reply.send(Err(EngineError::Internal(message.clone())));
                    let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
                }
            }
            return;
        }
        let vocab = self.model.vocab();
        let mut piece = Vec::with_capacity(32);
        for seq in 0..self.slots.len() {
            let Some(a) = self.slots[seq].as_mut() else { continue };
            if a.reply.is_closed() {
                self.finish(ctx, seq, None);
                continue;
            }
            let Some(at) = a.logits_at else { continue };
            let token = if a.greedy {
                first_max(ctx.get_logits_ith(at))
            } else {
                a.sampler.sample(ctx, at) // samples and accepts
            };
            let t = Instant::now();
            if vocab.is_eog(token) {
                a.fixed += t.elapsed();
                self.finish(ctx, seq, Some(FinishReason::Stop));
                continue;
            }
            a.tokens.push(token.0);
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let before = a.text.len();
            a.text.extend_from_slice(&piece);
            let stopped = find_stop(&a.text, before, &a.stop);
            if let Some(cut) = stopped {
                a.text.truncate(cut);
            }
            if stopped.is_none() {
                a.emit(false);
            }
            a.fixed += t.elapsed();
            if stopped.is_some() {
                self.finish(ctx, seq, Some(FinishReason::StopString));
            } else if a.tokens.len() >= a.n_predict {
                self.finish(ctx, seq, Some(FinishReason::Length));
            } else {
                a.pending = Some(token);
            }
        }
    }

    /// Frees a slot; with a reason, answers the request (without, it was cancelled).
    fn finish(&mut self, ctx: &mut LlamaContext<'_>, seq: usize, reason: Option<FinishReason>) {
        let Some(mut a) = self.slots[seq].take() else { return };
        if reason.is_some() {
            a.emit(true);
        }
        let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let Some(finish) = reason else {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        self.stats.prompt_tokens.fetch_add(a.prompt.len() as u64, Ordering::Relaxed);
        self.stats.generated_tokens.fetch_add(a.tokens.len() as u64, Ordering::Relaxed);
        let _ = a.reply.send(Ok(Generation {
            text: String::from_utf8_lossy(&a.text).into_owned(),
            usage: Usage { input_tokens: a.prompt.len() as u32, output_tokens: a.tokens.len() as u32 },
            tokens: a.tokens,
            finish,
            fixed_cost: a.fixed,
            compute_time: a.started.elapsed(),
        }));
    }
}
