//! Per-store resource limits and the bookkeeping that lets the host say which
//! limit stopped a request.

use std::time::Instant;

/// Enforces a component's memory cap and remembers whether it was hit.
pub(crate) struct Limiter {
    pub(crate) memory_bytes: usize,
    pub(crate) memory_hit: bool,
    /// When the request must be done by; checked at every epoch tick.
    pub(crate) deadline: Instant,
    pub(crate) deadline_hit: bool,
    /// This instance's share of the node's guest memory budget (given back on drop).
    pub(crate) charge: wasmesh_world::budget::Charge,
    /// Growth was refused because the node's budget was spent (by every instance
    /// together, not this one alone).
    pub(crate) budget_hit: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_hit = true;
            return Err(wasmtime::format_err!(
                "memory limit exceeded: the component asked for {} MiB, its limit is {} MiB",
                desired >> 20,
                self.memory_bytes >> 20
            ));
        }
        if let Err(refused) = self.charge.take(desired.saturating_sub(current)) {
            self.budget_hit = true;
            return Err(wasmtime::format_err!("{refused}"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real guest.
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}
