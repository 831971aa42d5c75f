//! The policy's rules, one test each (named after the rule).

use crate::hash::Rng;
use crate::{BuildError, Decision, ModelRef, NodeIndex, NodeState, PolicyConfig, Request, Snapshot, Tier, Warmth};

const GIB: u64 = 1 << 30;

fn key(s: &str) -> ModelRef {
    ModelRef::parse(s).expect("valid key")
}

fn node(id: &str) -> NodeState {
    NodeState::new(id, 8, 16 * GIB)
}

fn build(table: Vec<NodeState>) -> Snapshot {
    Snapshot::build(table, &PolicyConfig::default()).expect("valid table")
}

fn ids<'s>(snap: &'s Snapshot, d: &Decision) -> Vec<&'s str> {
    d.nodes().map(|n| snap.node_id(n).expect("index of this snapshot")).collect()
}

fn tiers(d: &Decision) -> Vec<Tier> {
    d.candidates().iter().map(|c| c.tier).collect()
}

fn idx(snap: &Snapshot, id: &str) -> NodeIndex {
    snap.index_of(id).expect("known id")
}

#[test]
fn never_routes_to_a_node_that_is_not_ready() {
    let m = key("llama");
    let snap = build(vec![
        node("down").with_ready(false).with_model(m.clone(), Warmth::Ram),
        node("up-warm").with_model(m.clone(), Warmth::Ram),
        node("up-cold"),
    ]);
    for k in 0..64 {
        let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
        assert!(!ids(&snap, &d).contains(&"down"), "{d:?}");
        assert_eq!(ids(&snap, &d), ["up-warm", "up-cold"]);
    }
    // Readiness applies at pick time, without a rebuild.
    snap.set_ready(idx(&snap, "up-warm"), false);
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(ids(&snap, &d), ["up-cold"]);
    let d = snap.route(&Request::without_model());
    assert_eq!(ids(&snap, &d), ["up-cold"]);
    snap.set_ready(idx(&snap, "up-cold"), false);
    assert!(snap.route(&Request::for_model(&m, GIB)).is_empty());
    assert!(snap.route(&Request::without_model()).is_empty());
}

#[test]
fn never_routes_outside_the_required_network() {
    let m = key("llama");
    let snap = build(vec![
        node("public-warm").with_model(m.clone(), Warmth::Ram),
        node("public-cold"),
        node("acme-cold").with_network("acme"),
        node("acme-cold-2").with_network("acme"),
        node("other-warm").with_network("other").with_model(m.clone(), Warmth::Ram),
    ]);
    for k in 0..64 {
        let d = snap.route(&Request::for_model(&m, GIB).in_network("acme").with_key(k));
        let mut got = ids(&snap, &d);
        got.sort_unstable();
        assert_eq!(got, ["acme-cold", "acme-cold-2"], "{d:?}");
        let d = snap.route(&Request::without_model().in_network("acme").with_key(k));
        assert!(ids(&snap, &d).iter().all(|id| id.starts_with("acme")), "{d:?}");
        // Public requests stay off private nodes too.
        let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
        assert_eq!(ids(&snap, &d), ["public-warm", "public-cold"]);
    }
    assert!(snap.route(&Request::for_model(&m, GIB).in_network("nobody")).is_empty());
    assert!(snap.route(&Request::without_model().in_network("nobody")).is_empty());
}

#[test]
fn ram_beats_disk_beats_free_memory_beats_eviction() {
    let m = key("llama");
    let snap = build(vec![
        NodeState::new("evict", 8, GIB).with_memory_idle(15 * GIB),
        node("fits"),
        NodeState::new("disk", 8, 0).with_memory_idle(16 * GIB).with_model(m.clone(), Warmth::Disk),
        NodeState::new("ram", 8, 0).with_model(m.clone(), Warmth::Ram),
        // 4 GiB free or idle: never asked to load an 8 GiB model, even from its disk.
        NodeState::new("tiny", 8, 2 * GIB).with_memory_idle(2 * GIB).with_model(m.clone(), Warmth::Disk),
        // Its memory held by models serving requests: no room now.
        NodeState::new("busy-memory", 8, 0).with_in_flight(1),
    ]);
    for k in 0..32 {
        let d = snap.route(&Request::for_model(&m, 8 * GIB).with_key(k));
        assert_eq!(ids(&snap, &d), ["ram", "disk", "fits", "evict"], "{d:?}");
        assert_eq!(tiers(&d), [Tier::Warm, Tier::Disk, Tier::Fits, Tier::Evict]);
    }
    // A 1 GiB model fits in "evict"'s free memory too: both "fits" now, in ring order.
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(tiers(&d), [Tier::Warm, Tier::Disk, Tier::Disk, Tier::Fits]);
    let d = snap.route(&Request::for_model(&m, 8 * GIB).in_network("none"));
    assert!(d.is_empty());
}

#[test]
fn spills_to_the_next_warm_node_when_one_is_at_its_concurrency() {
    let m = key("llama");
    let snap = build(vec![
        node("full").with_in_flight(8).with_model(m.clone(), Warmth::Ram),
        node("warm").with_in_flight(2).with_model(m.clone(), Warmth::Ram),
        node("cold"),
    ]);
    for k in 0..32 {
        let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
        assert_eq!(ids(&snap, &d), ["warm", "cold"], "a node at its concurrency is never listed");
    }
    // Fill "warm" too: the request spills to the cold node.
    let w = idx(&snap, "warm");
    for _ in 0..6 {
        snap.begin(w);
    }
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(ids(&snap, &d), ["cold"]);
    assert_eq!(d.candidates()[0].tier, Tier::Fits);
}

#[test]
fn warm_nodes_fill_in_rendezvous_order_up_to_their_busy_threshold() {
    let m = key("llama");
    let mut table: Vec<NodeState> =
        (0..4).map(|i| NodeState::new(format!("w{i}"), 16, 0).with_model(m.clone(), Warmth::Ram)).collect();
    table.extend((0..20).map(|i| NodeState::new(format!("filler{i}"), 16, 0).with_in_flight(8)));
    let snap = build(table);
    let busy = PolicyConfig::default().busy_fraction;
    let mut runs: Vec<NodeIndex> = Vec::new();
    for k in 0..40 {
        let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
        let first = d.candidates()[0];
        assert_eq!(first.tier, Tier::Warm, "{d:?}");
        assert_eq!(d.candidates().len(), 4, "all four warm nodes listed: {d:?}");
        if let Some(&last) = runs.last()
            && last != first.node
        {
            // The previous node was left only once it was busy.
            let (load, limit) = (snap.in_flight(last), snap.load_limit(last).unwrap());
            assert!(f64::from(load + 1) > busy * f64::from(limit), "left {last} at {load}/{limit}");
            // No node comes back before the whole list has had its turn (the cursor moves on).
            if runs.len() < 4 {
                assert!(!runs.contains(&first.node), "went back to {}: {runs:?}", first.node);
            }
        }
        if runs.last() != Some(&first.node) {
            runs.push(first.node);
        }
        snap.begin(first.node);
    }
    assert!(runs.len() >= 2, "40 requests fill more than one node: {runs:?}");
    // The order is the model's, not the request's: a rebuilt snapshot starts at the same node.
    let again =
        build((0..4).map(|i| NodeState::new(format!("w{i}"), 16, 0).with_model(m.clone(), Warmth::Ram)).collect());
    let firsts: Vec<_> = (0..8).map(|k| again.route(&Request::for_model(&m, GIB).with_key(k)).first()).collect();
    assert!(firsts.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(again.node_id(firsts[0].unwrap()), snap.node_id(runs[0]));
}

#[test]
fn bounded_load_leaves_a_lightly_loaded_warm_node_alone() {
    let m = key("llama");
    let table = || {
        let mut t = vec![NodeState::new("warm", 16, 0).with_in_flight(6).with_model(m.clone(), Warmth::Ram)];
        t.extend((0..30).map(|i| NodeState::new(format!("idle{i}"), 16, 16 * GIB)));
        t
    };
    // 6 of 16 slots used while the fabric idles: c times the mean is one request, but the warm
    // node is under half its concurrency, so it keeps the request.
    let snap = build(table());
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(snap.node_id(d.first().unwrap()), Some("warm"));
    assert!(!d.candidates()[0].over_bound);
    // With the floor off (the paper's rule at every load) it is skipped for a cold node.
    let cfg = PolicyConfig { min_bound: 0.0, ..PolicyConfig::default() };
    let snap = Snapshot::build(table(), &cfg).unwrap();
    let d = snap.route(&Request::for_model(&m, GIB));
    assert!(d.candidates().iter().all(|c| c.tier == Tier::Fits), "{d:?}");
}

#[test]
fn preload_hint_when_all_warm_nodes_are_busy() {
    let m = key("llama");
    let table = |w1: u32, w2: u32| {
        vec![
            NodeState::new("w1", 16, 16 * GIB).with_in_flight(w1).with_model(m.clone(), Warmth::Ram),
            NodeState::new("w2", 16, 16 * GIB).with_in_flight(w2).with_model(m.clone(), Warmth::Ram),
            NodeState::new("cold-a", 16, 16 * GIB).with_in_flight(8),
            NodeState::new("cold-b", 16, 16 * GIB).with_in_flight(8),
            NodeState::new("disk", 16, 16 * GIB).with_in_flight(8).with_model(m.clone(), Warmth::Disk),
        ]
    };
    // Loads 2 and 3 on the warm nodes: the mean with this request is 30/80 per slot, a 16-slot
    // node's cap max(floor(1.25 × 6), 6, 0.5 × 16) = 8, busy from 0.95 × 8 = 7.6.
    let snap = build(table(2, 3));
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(d.preload(), None, "room left on a warm node: no hint");
    // Loads 9 and 9: mean 43/80, cap max(floor(1.25 × 8.6), 9, 8) = 10, busy from 9.5. One
    // load may start, so every request names the same node.
    let one = PolicyConfig { max_loading: 1, ..PolicyConfig::default() };
    let snap = Snapshot::build(table(9, 9), &one).unwrap();
    for k in 0..16 {
        let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
        assert_eq!(d.candidates()[0].tier, Tier::Warm, "still served warm: {d:?}");
        let hint = d.preload().expect("both warm nodes busy: a hint");
        assert_eq!(snap.node_id(hint), Some("disk"), "the cheapest node to load it on");
    }
    // No hint while enough loads of the model are already under way.
    let mut t = table(9, 9);
    t.push(node("l1").with_model(m.clone(), Warmth::Loading));
    t.push(node("l2").with_model(m.clone(), Warmth::Loading));
    let snap = build(t);
    assert_eq!(snap.route(&Request::for_model(&m, GIB)).preload(), None);
    // A node at its concurrency counts as busy too.
    let snap = build(table(16, 16));
    let d = snap.route(&Request::for_model(&m, GIB));
    assert!(d.preload().is_some());
    assert!(d.candidates().iter().all(|c| c.tier != Tier::Warm));
}

#[test]
fn preload_hint_when_a_model_has_fewer_warm_copies_than_min_warm() {
    let m = key("llama");
    let snap = build(vec![node("only").with_model(m.clone(), Warmth::Ram), node("other")]);
    let d = snap.route(&Request::for_model(&m, GIB));
    assert_eq!(ids(&snap, &d), ["only", "other"]);
    assert_eq!(d.preload().and_then(|n| snap.node_id(n)), Some("other"));
    let cfg = PolicyConfig { min_warm: 1, ..PolicyConfig::default() };
    let snap = Snapshot::build(vec![node("only").with_model(m.clone(), Warmth::Ram), node("other")], &cfg).unwrap();
    assert_eq!(snap.route(&Request::for_model(&m, GIB)).preload(), None);
    // A model nobody holds gets no hint: the request itself loads it on the first candidate.
    assert_eq!(snap.route(&Request::for_model(&key("new"), GIB)).preload(), None);
    // A copy being loaded counts toward min_warm: one warm and one loading make two, so
    // the third node is not asked (the warm node has room).
    let snap = build(vec![
        node("warm").with_model(m.clone(), Warmth::Ram),
        node("loading").with_model(m.clone(), Warmth::Loading),
        node("third"),
    ]);
    assert_eq!(snap.route(&Request::for_model(&m, GIB)).preload(), None);
}

#[test]
fn preload_hints_spread_over_as_many_nodes_as_loads_may_start() {
    let m = key("llama");
    let table = || {
        let mut t: Vec<NodeState> = (0..8)
            .map(|i| NodeState::new(format!("w{i}"), 16, 0).with_in_flight(9).with_model(m.clone(), Warmth::Ram))
            .collect();
        t.extend((0..40).map(|i| NodeState::new(format!("c{i}"), 16, 16 * GIB).with_in_flight(8)));
        t
    };
    let hints = |cfg: &PolicyConfig| {
        let snap = Snapshot::build(table(), cfg).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..200 {
            let d = snap.route(&Request::for_model(&m, GIB).with_key(k));
            assert_eq!(d.candidates()[0].tier, Tier::Warm);
            seen.insert(d.preload().expect("every warm node busy"));
        }
        seen.len()
    };
    let mut cfg = PolicyConfig { max_loading: 1, loading_per_warm: 0.0, ..PolicyConfig::default() };
    assert_eq!(hints(&cfg), 1, "one load may start: every request names the same node");
    cfg.loading_per_warm = 0.5;
    assert_eq!(hints(&cfg), 4, "8 warm copies × 0.5: four nodes named");
}

/// Places requests (never completing them) and checks the heaviest node against the mean.
fn place_and_measure(snap: &Snapshot, requests: impl Iterator<Item = Option<ModelRef>>, c: f64) -> f64 {
    let mut placed = 0u64;
    for (k, model) in requests.enumerate() {
        let req = match &model {
            Some(m) => Request::for_model(m, GIB),
            None => Request::without_model(),
        };
        let d = snap.route(&req.with_key(k as u64 * 0x9e37_79b9));
        let first = d.candidates().first().expect("capacity left");
        assert!(!first.over_bound, "a node under its cap exists while capacity is ample (c = {c}, request {k}): {d:?}");
        snap.begin(first.node);
        placed += 1;
    }
    let nodes = || (0..snap.len()).map(|i| NodeIndex(i as u32));
    let cap: u64 = nodes().map(|n| u64::from(snap.max_concurrency(n))).sum();
    let mean = placed as f64 / cap as f64;
    let max = nodes().map(|n| f64::from(snap.in_flight(n)) / f64::from(snap.max_concurrency(n))).fold(0.0, f64::max);
    let ratio = max / mean;
    assert!(ratio <= c + 1e-9, "max/mean {ratio:.3} above c = {c}");
    ratio
}

#[test]
fn bounded_load_keeps_max_over_mean_at_most_c() {
    // 200 nodes of 16 or 32 slots, 60 Zipf-popular models each warm on a few nodes.
    let mut rng = Rng::new(7);
    let models: Vec<ModelRef> = (0..60).map(|i| key(&format!("m{i}"))).collect();
    let table: Vec<NodeState> = (0..200)
        .map(|i| {
            let mut n = NodeState::new(format!("n{i}"), if i % 2 == 0 { 16 } else { 32 }, 64 * GIB);
            for _ in 0..2 {
                n = n.with_model(models[rng.below(models.len())].clone(), Warmth::Ram);
            }
            n
        })
        .collect();
    let zipf: Vec<f64> = (1..=models.len()).map(|r| 1.0 / r as f64).collect();
    let total: f64 = zipf.iter().sum();
    let mut draw = Rng::new(11);
    let pick = move || {
        let mut u = draw.unit() * total;
        for (i, w) in zipf.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        zipf.len() - 1
    };
    for c in [1.1, 1.25, 1.5] {
        let snap = Snapshot::build(table.clone(), &PolicyConfig::default().with_load_factor(c)).unwrap();
        let mut pick = pick.clone();
        // 3 600 of 4 800 slots: 75 % busy, the hot model alone wanting far more than its nodes.
        let ratio = place_and_measure(&snap, (0..3600).map(|_| Some(models[pick()].clone())), c);
        assert!(ratio > 1.0);
        let snap = Snapshot::build(table.clone(), &PolicyConfig::default().with_load_factor(c)).unwrap();
        place_and_measure(&snap, (0..3600).map(|_| None), c);
    }
}

#[test]
fn consistent_hashing_moves_only_the_keys_of_a_node_that_leaves() {
    let table: Vec<NodeState> = (0..100).map(|i| NodeState::new(format!("n{i}"), 8, 64 * GIB)).collect();
    let models: Vec<ModelRef> = (0..2000).map(|i| key(&format!("model-{i}"))).collect();
    let first = |snap: &Snapshot| -> Vec<String> {
        models
            .iter()
            .map(|m| {
                let d = snap.route(&Request::for_model(m, GIB));
                snap.node_id(d.first().expect("a node")).expect("known").to_owned()
            })
            .collect()
    };
    let before = first(&build(table.clone()));
    let gone = "n42";
    let after = first(&build(table.iter().filter(|n| n.id != gone).cloned().collect()));
    let moved: Vec<usize> = (0..models.len()).filter(|&i| before[i] != after[i]).collect();
    // Exactly the keys homed on the node that left move; every other key stays put.
    assert!(moved.iter().all(|&i| before[i] == gone), "a key moved off a node that stayed");
    assert_eq!(moved.len(), before.iter().filter(|n| *n == gone).count());
    assert!(moved.len() < 2000 / 100 * 3, "{} keys moved", moved.len());
    // Keys spread over the ring: no node is home to more than 3× its share.
    let mut per_node = std::collections::HashMap::new();
    for n in &before {
        *per_node.entry(n).or_insert(0) += 1;
    }
    assert!(per_node.values().all(|&c| c <= 60), "{per_node:?}");
    // And a node that joins takes keys only for itself.
    let mut grown = table.clone();
    grown.push(NodeState::new("new", 8, 64 * GIB));
    let joined = first(&build(grown));
    assert!((0..models.len()).all(|i| joined[i] == before[i] || joined[i] == "new"));
}

#[test]
fn decisions_are_pinned_and_repeat_across_builds() {
    let table: Vec<NodeState> = (0..10).map(|i| node(&format!("n{i}"))).collect();
    let a = build(table.clone());
    let b = build(table);
    let m = key("pinned");
    let seq: Vec<Vec<&str>> = (0..4).map(|k| ids(&a, &a.route(&Request::for_model(&m, GIB).with_key(k)))).collect();
    for (k, want) in seq.iter().enumerate() {
        assert_eq!(&ids(&b, &b.route(&Request::for_model(&m, GIB).with_key(k as u64))), want);
    }
    // Cold placement ignores the request key: every request of a model agrees on its home.
    assert!(seq.windows(2).all(|w| w[0] == w[1]));
    // Pinned: the hashes are stable across processes and routers, so these never change
    // unless the placement rule does.
    assert_eq!(seq[0], ["n1", "n9", "n6", "n3"]);
    assert_eq!(ids(&a, &a.route(&Request::without_model().with_key(7))), ["n4", "n5", "n3", "n8"]);
}

#[test]
fn lora_is_warm_only_over_a_warm_base() {
    let base = key("llama");
    let lora = key("llama:sql");
    let snap = build(vec![
        node("both-ram").with_model(base.clone(), Warmth::Ram).with_model(lora.clone(), Warmth::Ram),
        node("adapter-over-disk-base").with_model(base.clone(), Warmth::Disk).with_model(lora.clone(), Warmth::Ram),
        node("base-ram").with_model(base.clone(), Warmth::Ram),
        node("empty"),
    ]);
    for k in 0..16 {
        let d = snap.route(&Request::for_model(&lora, 5 * GIB).with_key(k));
        assert_eq!(ids(&snap, &d), ["both-ram", "base-ram", "adapter-over-disk-base", "empty"], "{d:?}");
        assert_eq!(tiers(&d), [Tier::Warm, Tier::BaseWarm, Tier::Disk, Tier::Fits]);
    }
    // The base model's own requests see the adapter's nodes as holders of the base.
    let d = snap.route(&Request::for_model(&base, 5 * GIB));
    assert_eq!(tiers(&d)[..2], [Tier::Warm, Tier::Warm]);
    // An adapter nobody holds still goes to its base's warm nodes first.
    let d = snap.route(&Request::for_model(&key("llama:new"), 5 * GIB));
    assert_eq!(tiers(&d)[..2], [Tier::BaseWarm, Tier::BaseWarm]);
}

#[test]
fn a_model_nobody_has_goes_to_nodes_with_memory_and_nowhere_without() {
    let m = key("brand-new");
    let snap = build(vec![
        NodeState::new("big-free", 8, 32 * GIB),
        NodeState::new("big-full", 8, 0).with_memory_idle(32 * GIB),
        NodeState::new("small", 8, 4 * GIB),
        NodeState::new("in-use", 8, 0).with_in_flight(2),
    ]);
    let d = snap.route(&Request::for_model(&m, 10 * GIB));
    assert_eq!(ids(&snap, &d), ["big-free", "big-full"]);
    assert_eq!(tiers(&d), [Tier::Fits, Tier::Evict]);
    assert_eq!(d.preload(), None);
    let d = snap.route(&Request::for_model(&m, 64 * GIB));
    assert!(d.is_empty(), "no node has the memory: {d:?}");
}

#[test]
fn over_bound_nodes_come_after_every_node_under_its_cap() {
    let m = key("llama");
    let snap = build(vec![
        NodeState::new("warm-hot", 16, 16 * GIB).with_in_flight(15).with_model(m.clone(), Warmth::Ram),
        NodeState::new("cold-1", 16, 16 * GIB).with_in_flight(1),
        NodeState::new("cold-2", 16, 16 * GIB).with_in_flight(1),
    ]);
    // Mean with this request: 18/48; cap of a 16-slot node: max(floor(1.25·6), 6, 0.5·16) = 8.
    assert_eq!(snap.load_limit(idx(&snap, "warm-hot")), Some(8));
    let d = snap.route(&Request::for_model(&m, GIB));
    let got = ids(&snap, &d);
    assert_eq!(got[2], "warm-hot", "{d:?}");
    assert!(d.candidates()[2].over_bound && !d.candidates()[0].over_bound);
    assert!(d.preload().is_some(), "the only warm node is busy");
}

#[test]
fn requests_without_a_model_spread_by_key_under_the_bound() {
    let table: Vec<NodeState> = (0..50).map(|i| node(&format!("n{i}"))).collect();
    let snap = build(table);
    let mut seen = std::collections::HashSet::new();
    for k in 0..500 {
        let d = snap.route(&Request::without_model().with_key(k));
        assert_eq!(d.candidates().len(), 4);
        assert!(d.candidates().iter().all(|c| c.tier == Tier::Any && !c.over_bound));
        seen.insert(d.first());
        // The same key lands on the same node.
        assert_eq!(snap.route(&Request::without_model().with_key(k)).first(), d.first());
    }
    assert!(seen.len() > 40, "keys spread over the ring: {} nodes used", seen.len());
}

#[test]
fn loads_move_with_begin_and_end_and_never_go_below_zero() {
    let snap = build(vec![node("a").with_in_flight(1)]);
    let a = idx(&snap, "a");
    snap.begin(a);
    assert_eq!(snap.in_flight(a), 2);
    for _ in 0..5 {
        snap.end(a);
    }
    assert_eq!(snap.in_flight(a), 0);
    // Indices of another (larger) snapshot are ignored, never a panic.
    snap.begin(NodeIndex(99));
    snap.end(NodeIndex(99));
    assert_eq!(snap.in_flight(NodeIndex(99)), 0);
    assert_eq!(snap.node_id(NodeIndex(99)), None);
}

#[test]
fn build_rejects_duplicate_ids_and_bad_config() {
    let err = Snapshot::build(vec![node("a"), node("a")], &PolicyConfig::default()).unwrap_err();
    assert_eq!(err, BuildError::DuplicateNode { id: "a".into() });
    assert!(err.to_string().contains("latest heartbeat"));
    let err = Snapshot::build(vec![node("a")], &PolicyConfig::default().with_load_factor(0.5)).unwrap_err();
    assert!(matches!(err, BuildError::Config(ref e) if e.field == "load_factor"), "{err}");
    let cfg = PolicyConfig { max_candidates: 9, ..PolicyConfig::default() };
    assert!(Snapshot::build(vec![], &cfg).is_err());
    // An empty table routes nowhere.
    let empty = build(vec![]);
    assert!(empty.route(&Request::without_model()).is_empty());
}

#[test]
fn fewer_candidates_when_configured() {
    let m = key("llama");
    let table: Vec<NodeState> = (0..10).map(|i| node(&format!("n{i}")).with_model(m.clone(), Warmth::Ram)).collect();
    let cfg = PolicyConfig { max_candidates: 2, ..PolicyConfig::default() };
    let snap = Snapshot::build(table, &cfg).unwrap();
    assert_eq!(snap.route(&Request::for_model(&m, GIB)).candidates().len(), 2);
}

#[test]
fn among_warm_holders_higher_reputation_comes_first() {
    let m = key("llama");
    // Whatever the hash order of the ids, the node of the higher band is first.
    for (a, b) in [("alpha", "beta"), ("beta", "alpha"), ("n1", "n2"), ("n2", "n1")] {
        let snap = build(vec![
            node(a).with_reputation(1).with_model(m.clone(), Warmth::Ram),
            node(b).with_reputation(5).with_model(m.clone(), Warmth::Ram),
        ]);
        let d = snap.route(&Request::for_model(&m, GIB));
        assert_eq!(ids(&snap, &d).first(), Some(&b), "{d:?}");
    }
}
