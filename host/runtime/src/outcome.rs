//! How a guest call ended ([`Outcome`]), read from its store: deadline, memory cap,
//! trap, and the words that describe it to the caller and the log.

use crate::app::LoadedComponent;
use crate::state::HostState;
use wasmtime::Store;

/// How a guest call ended, read from its store.
pub(crate) struct Outcome {
    pub(crate) timed_out: bool,
    pub(crate) memory_hit: bool,
    /// The node's memory budget for all instances was spent (not this one's limit).
    pub(crate) budget_hit: bool,
    pub(crate) instantiated: bool,
    pub(crate) error: Option<String>,
    usage: wasmesh_engine::Usage,
    models: Vec<String>,
    embeddings: u64,
    finish: Option<wasmesh_engine::FinishReason>,
    commitment: Option<String>,
    tokens: wasmesh_api::wire::GenerationIds,
    score: Option<wasmesh_api::wire::ClaimScore>,
}

impl Outcome {
    /// Reads the outcome of a call that ended with `result` (`Err` when it ran past
    /// its deadline) from its store.
    pub(crate) fn of<T>(
        store: &Store<HostState>,
        result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
        instantiated: bool,
    ) -> Self {
        let data = store.data();
        Outcome {
            timed_out: result.is_err() || data.limiter.deadline_hit,
            memory_hit: data.limiter.memory_hit,
            budget_hit: data.limiter.budget_hit || data.nn.budget_hit,
            instantiated,
            error: match result {
                // The root cause names what happened (a trap, a limit); the outer layers
                // only say that the guest was running.
                Ok(Err(e)) => Some(e.root_cause().to_string()),
                _ => None,
            },
            usage: {
                let mut usage = data.nn.usage;
                usage += data.llm.usage;
                usage
            },
            models: {
                let mut models = data.nn.models.clone();
                models.extend(data.llm.models.iter().filter(|m| !data.nn.models.contains(m)).cloned());
                models
            },
            embeddings: data.nn.embeddings + data.llm.embeddings,
            finish: data.nn.finish.or(data.llm.finish),
            commitment: data.nn.commitment.clone().and(&data.llm.commitment).hex(),
            tokens: wasmesh_api::wire::GenerationIds {
                nn: data.nn.replay.produced().to_vec(),
                llm: data.llm.replay.produced().to_vec(),
            },
            score: match (data.nn.replay.score(), data.llm.replay.score()) {
                (Some(mut nn), Some(llm)) => {
                    nn.add(&llm);
                    Some(nn)
                }
                (nn, llm) => nn.or(llm),
            },
        }
    }

    /// What the call used, for the request's receipt.
    pub(crate) fn served(&self, app: &str) -> crate::Served {
        let failed = self.timed_out || self.memory_hit || self.budget_hit || self.error.is_some();
        let finish_reason = match self.finish {
            _ if failed => Some("error".to_string()),
            Some(wasmesh_engine::FinishReason::Length) => Some("length".to_string()),
            Some(_) => Some("stop".to_string()),
            None => None,
        };
        crate::Served {
            app: app.to_string(),
            models: self.models.clone(),
            input_tokens: u64::from(self.usage.input_tokens),
            output_tokens: u64::from(self.usage.output_tokens),
            embeddings: self.embeddings,
            failed,
            finish_reason,
            commitment: self.commitment.clone(),
            tokens: self.tokens.clone(),
            score: self.score,
        }
    }

    pub(crate) fn describe(&self, c: &LoadedComponent) -> String {
        if self.timed_out {
            format!(
                "component '{}' was stopped at its deadline of {} ms; raise limits.timeout_ms in [component.{}.limits] if it needs longer",
                c.name,
                c.limits.timeout_ms(),
                c.name
            )
        } else if self.budget_hit {
            match &self.error {
                Some(e) => format!("component '{}' was stopped: {}", c.name, first_line(e)),
                None => {
                    format!("component '{}' was stopped: this node's instance memory is in use; retry shortly", c.name)
                }
            }
        } else if self.memory_hit {
            format!(
                "component '{}' was stopped at its memory limit of {} MiB; raise limits.memory_mb in [component.{}.limits] if it needs more",
                c.name,
                c.limits.memory_bytes() >> 20,
                c.name
            )
        } else if !self.instantiated {
            format!(
                "the host could not instantiate component '{}' (at capacity?): {}",
                c.name,
                self.error.as_deref().unwrap_or("unknown error")
            )
        } else if let Some(e) = &self.error {
            format!("component '{}' trapped: {}", c.name, first_line(e))
        } else {
            format!("component '{}' returned without sending a response", c.name)
        }
    }

    pub(crate) fn limit_key(&self) -> Option<&'static str> {
        if self.timed_out {
            Some("timeout_ms")
        } else if self.memory_hit {
            Some("memory_mb")
        } else {
            None
        }
    }
}

/// The first line of an error's text (Wasmtime's traps carry a backtrace after it).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
