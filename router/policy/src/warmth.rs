//! Where a node holds a model ([`Warmth`]).

/// Where a node holds a model key.
///
/// An adapter key counts as [`Warmth::Ram`] only while its base model is in RAM on the same node
/// too: [`Snapshot::build`](crate::Snapshot::build) lowers an adapter reported in RAM over a base
/// that is not to [`Warmth::Disk`] (a load away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Warmth {
    /// Loaded in RAM: a request runs at once.
    Ram,
    /// Being fetched or loaded: warm in a few seconds. The router may send a request there (it
    /// waits for the load), but never asks a second time for it to be pre-loaded.
    Loading,
    /// On the node's disk: a load away, no download.
    Disk,
}
