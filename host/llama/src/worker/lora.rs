//! LoRA adapters on a warm model: the adapter cache (attached on first use, the least
//! recently used idle one freed when the cache is full), and putting adapters on the
//! context before each step: each sequence's own (mixed mode, our llama.cpp patch), or
//! one group's adapter on the whole context, rotating between groups (the fallback).

use super::AdapterFile;
use super::scheduler::Scheduler;
use crate::ffi;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaLoraAdapter;
use std::sync::atomic::Ordering;
use std::time::Instant;
use wasmesh_engine::EngineError;

/// Which adapter (place in [`Scheduler::adapters`], scale bits) a sequence runs with;
/// `None` is the base model. In mixed mode each sequence carries its key into every
/// step; in rotation mode a step runs the sequences of one key.
pub(crate) type LoraKey = Option<(usize, u32)>;

/// An adapter attached to the worker's model.
pub(crate) struct Adapter {
    pub(crate) name: String,
    pub(crate) handle: LlamaLoraAdapter,
    /// [`Scheduler::adapter_tick`] at its last use.
    last_used: u64,
}

impl Scheduler<'_> {
    /// The place of adapter `name`, attaching it from `file` first when it is not
    /// attached (freeing the least recently used idle adapter when the cache is full).
    pub(crate) fn adapter(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        model: &str,
        name: &str,
        file: Option<AdapterFile>,
    ) -> Result<usize, EngineError> {
        self.adapter_tick += 1;
        let tick = self.adapter_tick;
        if let Some(index) = self.adapters.iter().position(|a| a.as_ref().is_some_and(|a| a.name == name)) {
            self.adapters[index].as_mut().expect("found").last_used = tick;
            return Ok(index);
        }
        let Some(file) = file.filter(|f| f.name == name) else {
            return Err(EngineError::InvalidRequest(format!(
                "LoRA adapter '{name}' is not known for model '{model}'; push it with `wasmesh loras push` \
                 (GET /v1/loras lists them)"
            )));
        };
        let place = self.free_place(ctx).ok_or_else(|| {
            EngineError::Unavailable(format!(
                "all {} adapter places of model '{model}' are in use by running requests; retry",
                self.max_adapters
            ))
        })?;
        let t = Instant::now();
        let handle = ffi::attach_lora(self.model, &file.path).map_err(|reason| EngineError::Load {
            name: format!("{model}:{name}"),
            reason: format!("LoRA file {}: {reason}", file.path.display()),
        })?;
        let ns = t.elapsed().as_nanos() as u64;
        self.stats.lora_attaches.fetch_add(1, Ordering::Relaxed);
        self.stats.lora_attach_ns.fetch_add(ns, Ordering::Relaxed);
        tracing::info!(%model, lora = %name, ms = ns / 1_000_000, "LoRA adapter attached to the warm model");
        let adapter = Adapter { name: name.to_string(), handle, last_used: tick };
        if place == self.adapters.len() {
            self.adapters.push(Some(adapter));
        } else {
            self.adapters[place] = Some(adapter);
        }
        self.publish_attached();
        Ok(place)
    }

    /// A place for one more adapter: an empty one, a new one while under the cap, or
    /// the least recently used adapter that no sequence runs with (freed here, taken off
    /// the context first if it is set there). `None` when every adapter is in use.
    fn free_place(&mut self, ctx: &mut LlamaContext<'_>) -> Option<usize> {
        if let Some(empty) = self.adapters.iter().position(Option::is_none) {
            return Some(empty);
        }
        if self.adapters.len() < self.max_adapters {
            return Some(self.adapters.len());
        }
        let in_use = |index: usize| self.slots.iter().flatten().any(|a| a.lora.is_some_and(|(i, _)| i == index));
        let victim = (0..self.adapters.len())
            .filter(|&i| !in_use(i))
            .min_by_key(|&i| self.adapters[i].as_ref().map_or(0, |a| a.last_used))?;
        // Finished sequences may still carry it on the context until the next step.
        for seq in 0..self.seq_lora.len() {
            if self.seq_lora[seq].is_some_and(|(i, _)| i == victim) {
                if let Err(e) = ctx.lora_adapter_set_seq(seq as i32, None, 0.0) {
                    tracing::warn!("cannot take the LoRA adapter off sequence {seq}: {e}");
                    return None;
                }
                self.seq_lora[seq] = None;
            }
        }
        if self.applied.is_some_and(|(i, _)| i == victim) {
            // Set on the context by the last step, but no sequence runs with it now.
            let adapter = self.adapters[victim].as_mut().expect("applied");
            if let Err(e) = ctx.lora_adapter_remove(&mut adapter.handle) {
                tracing::warn!("cannot take the LoRA adapter off the context: {e}");
                return None;
            }
            self.applied = None;
        }
        let old = self.adapters[victim].take().expect("a full cache has no empty place");
        tracing::info!(lora = %old.name, "LoRA adapter freed to make room (least recently used)");
        // SAFETY: no sequence runs with it and the context does not hold it (taken off above),
        // and its place is now empty, so nothing uses it again.
        #[allow(unsafe_code)]
        unsafe {
            ffi::free_lora(old.handle)
        };
        self.stats.lora_evictions.fetch_add(1, Ordering::Relaxed);
        Some(victim)
    }

    /// Shows the attached adapters in [`super::WorkerStats::attached`].
    fn publish_attached(&self) {
        let names: Vec<String> = self.adapters.iter().flatten().map(|a| a.name.clone()).collect();
        *self.stats.attached.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// Puts the adapters of the next step on the context. Returns the adapter group the
    /// step runs (`None`: every sequence, each with its own adapter), and whether the
    /// adapters are in place (else a message for the requests of that group).
    pub(crate) fn prepare_adapters(&mut self, ctx: &mut LlamaContext<'_>) -> (Option<LoraKey>, Result<(), String>) {
        if self.mixed_lora {
            return (None, self.sync_adapters(ctx));
        }
        let group = self.next_group();
        let ready = self.apply(ctx, group);
        (Some(group), ready)
    }

    /// Mixed mode: sets each sequence's adapter on the context where it changed since
    /// the last step (a request admitted or finished, a sequence moved by compaction).
    /// Each set is a few stores in llama.cpp; the graph is rebuilt only when the set of
    /// adapters in the batch changes.
    fn sync_adapters(&mut self, ctx: &mut LlamaContext<'_>) -> Result<(), String> {
        for seq in 0..self.slots.len() {
            let want = self.slots[seq].as_ref().and_then(|a| a.lora);
            if self.seq_lora[seq] == want {
                continue;
            }
            let scale = want.map_or(0.0, |(_, scale)| f32::from_bits(scale));
            let adapter = want.map(|(index, _)| {
                &mut self.adapters[index].as_mut().expect("a running sequence's adapter stays attached").handle
            });
            ctx.lora_adapter_set_seq(seq as i32, adapter, scale)
                .map_err(|e| format!("cannot set the LoRA adapter of sequence {seq}: {e}"))?;
            self.seq_lora[seq] = want;
        }
        Ok(())
    }

    /// Rotation mode: the adapter group to run next, the one after the last in key order.
    fn next_group(&mut self) -> LoraKey {
        if self.adapters.is_empty() {
            return None; // the common case: no per-step work at all
        }
        let mut keys: Vec<LoraKey> = self.slots.iter().flatten().map(|a| a.lora).collect();
        keys.sort_unstable();
        keys.dedup();
        let group = match self.last_group {
            Some(last) => keys.iter().copied().find(|k| *k > last).unwrap_or(keys[0]),
            None => keys[0],
        };
        self.last_group = Some(group);
        group
    }

    /// Rotation mode: puts `group`'s adapter on the context, if another one is there.
    fn apply(&mut self, ctx: &mut LlamaContext<'_>, group: LoraKey) -> Result<(), String> {
        if self.applied == group {
            return Ok(());
        }
        let t = Instant::now();
        match group {
            Some((index, scale)) => {
                let adapter = self.adapters[index].as_mut().expect("a running sequence's adapter stays attached");
                ctx.lora_adapter_set(&mut adapter.handle, f32::from_bits(scale))
                    .map_err(|e| format!("cannot apply LoRA '{}': {e}", adapter.name))?;
            }
            None => {
                // llama-cpp-2 asks for an adapter here but clears them all.
                let adapter = self.adapters.iter_mut().flatten().next().expect("an adapter was applied");
                ctx.lora_adapter_remove(&mut adapter.handle)
                    .map_err(|e| format!("cannot remove the LoRA adapter: {e}"))?;
            }
        }
        self.applied = group;
        self.stats.lora_switches.fetch_add(1, Ordering::Relaxed);
        self.stats.lora_switch_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }
}
