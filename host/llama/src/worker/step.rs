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
            let checked = a.prompt.len() > a.n_prompt || a.scoring.is_some();
            for i in a.prefilled..a.prefilled + take {
                // Logits at the last prompt token, and (checking a claim) at each claimed one.
                let logits = if checked { i + 1 >= a.n_prompt } else { i + 1 == a.prompt.len() };
                if logits && checked {
                    a.checks.push(self.batch.n_tokens());
                } else if logits {
                    a.logits_at = Some(self.batch.n_tokens());
                }
                self.batch.add(a.prompt[i], a.pos as i32, &[seq as i32], logits).expect("batch has room");
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
        let mut piece = Vec::with_capacity(32);
        for seq in 0..self.slots.len() {
            let Some(a) = self.slots[seq].as_mut() else { continue };
            if a.reply.is_closed() {
                self.finish(ctx, seq, None);
                continue;
            }
            if !a.checks.is_empty() && a.scoring.is_some() {
                self.score(ctx, seq, &mut piece);
                continue;
            }
            if !a.checks.is_empty() {
                self.check(ctx, seq, &mut piece);
                continue;
            }
            let Some(at) = a.logits_at else { continue };
            let token = pick(a, ctx, at);
            if self.accept(ctx, seq, token, &mut piece)
                && let Some(a) = self.slots[seq].as_mut()
            {
                a.pending = Some(token);
            }
        }
    }

    /// A checked request's step: the model's pick at each claimed position, in order,
    /// taken as if generated. While the pick is the claimed token, that token is already
    /// in the sequence; at the first other pick (or past the claim) the rest of the claim
    /// is dropped from the sequence and the request generates on from its own pick.
    fn check(&mut self, ctx: &mut LlamaContext<'_>, seq: usize, piece: &mut Vec<u8>) {
        let checks = std::mem::take(&mut self.slots[seq].as_mut().expect("an active slot").checks);
        for at in checks {
            let a = self.slots[seq].as_mut().expect("still active");
            let at_claim = a.n_prompt + a.tokens.len();
            let claimed = a.prompt.get(at_claim).copied();
            let token = pick(a, ctx, at);
            let agreed = claimed == Some(token);
            match claimed {
                Some(_) if agreed => self.stats.checked_tokens.fetch_add(1, Ordering::Relaxed),
                Some(_) => self.stats.check_divergences.fetch_add(1, Ordering::Relaxed),
                None => 0,
            };
            if !self.accept(ctx, seq, token, piece) {
                return;
            }
            if agreed {
                continue;
            }
            let a = self.slots[seq].as_mut().expect("still active");
            let _ = ctx.kv_cache_seq_rm(seq as i32, Some(at_claim as u32), None);
            a.prompt.truncate(at_claim);
            a.prefilled = at_claim;
            a.pos = at_claim;
            a.pending = Some(token);
            return;
        }
    }

    /// A scored request's step: each claimed position scored, and its claimed token
    /// taken whatever the model would pick. Where the claim stops short of the request's
    /// length and stop strings, the node claims the model ended its text there: that end
    /// is scored too, and the request ends.
    fn score(&mut self, ctx: &mut LlamaContext<'_>, seq: usize, piece: &mut Vec<u8>) {
        let checks = std::mem::take(&mut self.slots[seq].as_mut().expect("an active slot").checks);
        for at in checks {
            let a = self.slots[seq].as_mut().expect("still active");
            let claimed = a.prompt.get(a.n_prompt + a.tokens.len()).copied();
            let scoring = a.scoring.as_mut().expect("a scored request");
            scoring.position(ctx.get_logits_ith(at), claimed.map(|t| t.0));
            let Some(token) = claimed else {
                self.finish(ctx, seq, Some(FinishReason::Stop));
                return;
            };
            scoring.accept(token.0);
            self.stats.checked_tokens.fetch_add(1, Ordering::Relaxed);
            if !self.accept(ctx, seq, token, piece) {
                return;
            }
        }
    }

    /// Takes `token` as the slot's next: ends the request at an end-of-generation token,
    /// a stop string or its length, else adds it to the text (streaming what is ready).
    /// Whether the request goes on.
    fn accept(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        seq: usize,
        token: llama_cpp_2::token::LlamaToken,
        piece: &mut Vec<u8>,
    ) -> bool {
        let model = self.model;
        let vocab = model.vocab();
        let a = self.slots[seq].as_mut().expect("an active slot");
        let t = Instant::now();
        if vocab.is_eog(token) {
            a.fixed += t.elapsed();
            self.finish(ctx, seq, Some(FinishReason::Stop));
            return false;
        }
        a.tokens.push(token.0);
        piece.clear();
        vocab.token_to_piece_into(token, piece, false, None);
        let before = a.text.len();
        a.text.extend_from_slice(piece);
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
            false
        } else if a.tokens.len() >= a.n_predict {
            self.finish(ctx, seq, Some(FinishReason::Length));
            false
        } else {
            true
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
        self.stats.prompt_tokens.fetch_add(a.n_prompt as u64, Ordering::Relaxed);
        self.stats.generated_tokens.fetch_add(a.tokens.len() as u64, Ordering::Relaxed);
        let _ = a.reply.send(Ok(Generation {
            text: String::from_utf8_lossy(&a.text).into_owned(),
            usage: Usage { input_tokens: a.n_prompt as u32, output_tokens: a.tokens.len() as u32 },
            tokens: a.tokens,
            finish,
            fixed_cost: a.fixed,
            compute_time: a.started.elapsed(),
            score: a.scoring.map(|s| s.score),
        }));
    }
}

/// The slot's next token from the logits at batch index `at`: the first largest logit
/// for plain greedy decoding, else its sampler's pick (which the sampler accepts).
fn pick(a: &mut super::slot::Active, ctx: &mut LlamaContext<'_>, at: i32) -> llama_cpp_2::token::LlamaToken {
    if a.greedy { first_max(ctx.get_logits_ith(at)) } else { a.sampler.sample(ctx, at) }
}
