//! The error body every registry endpoint answers with when a request fails.

use serde::{Deserialize, Serialize};

/// The body of every error the registry returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in a sentence that says what to do.
    pub error: String,
    /// A stable machine-readable code, e.g. `unauthorized`, `invalid_component`.
    pub code: String,
}
