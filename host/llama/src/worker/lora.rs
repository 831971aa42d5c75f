//! LoRA adapter groups: which adapter a sequence runs with, which group the next
//! step runs, and switching the context's adapter between steps.

use super::scheduler::Scheduler;
use llama_cpp_2::context::LlamaContext;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Which adapter (index, scale bits) a sequence runs with; `None` is the base model.
/// llama.cpp applies adapters to a whole context, so each decode step runs the
/// sequences of one key, and steps rotate between keys.
pub(crate) type LoraKey = Option<(usize, u32)>;

impl Scheduler<'_> {
    /// The adapter group to run next: the one after the last, in key order.
    pub(crate) fn next_group(&mut self) -> LoraKey {
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

    /// Puts `group`'s adapter on the context, if another one is there.
    pub(crate) fn apply(&mut self, ctx: &mut LlamaContext<'_>, group: LoraKey) -> Result<(), String> {
        if self.applied == group {
            return Ok(());
        }
        let t = Instant::now();
        match group {
            Some((index, scale)) => ctx
                .lora_adapter_set(&mut self.adapters[index].1, f32::from_bits(scale))
                .map_err(|e| format!("cannot apply LoRA '{}': {e}", self.adapters[index].0))?,
            None => {
                let adapter = &mut self.adapters.first_mut().expect("an adapter was applied").1;
                ctx.lora_adapter_remove(adapter).map_err(|e| format!("cannot remove the LoRA adapter: {e}"))?;
            }
        }
        self.applied = group;
        self.stats.lora_switches.fetch_add(1, Ordering::Relaxed);
        self.stats.lora_switch_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }
}
