//! Scoring a claim: an audit's replay on an auditor of another engine build or CPU
//! class (`GenerateRequest::score`). Its rounding differs from the node's, so it cannot
//! expect the node's exact picks; instead, at each claimed position it asks whether the
//! request's sampler could have picked the claimed token from the model's logits there,
//! and how surprising the token was.
//!
//! The sampler is the one `sampling::build_sampler` builds, followed step by step as
//! llama.cpp does it: the repeat penalty over the last tokens, then for sampling top-k,
//! top-p (on the penalized logits), temperature and the distribution the draw is made
//! from; for greedy decoding the largest logit. A sampled request with a seed (every
//! metered one: the router seeds them) draws from the same Mersenne Twister as llama.cpp's
//! `dist` sampler (`std::mt19937`, one `uniform_real_distribution<double>` draw per
//! position), so the auditor knows each draw and where in the distribution it fell: the
//! claimed token must be the one there, give or take rounding.

use std::collections::{HashMap, VecDeque};
use wasmesh_api::wire::ClaimScore;
use wasmesh_engine::GenerateParams;

/// How far a draw may fall off its claimed token's share before it counts as a miss:
/// float rounding of the shares, not the differences between builds.
const DRAW_ROUNDING: f64 = 1e-3;

/// A scored request's sampler, followed over the claim, and its score so far.
pub(crate) struct Scoring {
    /// Top-k (0: off), top-p and temperature when sampling; `None` when greedy.
    sampled: Option<(usize, f32, f32)>,
    penalty: f32,
    last_n: usize,
    /// The last `last_n` tokens taken, and how often each is among them.
    window: VecDeque<i32>,
    counts: HashMap<i32, u32>,
    /// The vocabulary's end-of-generation tokens.
    eog: Vec<i32>,
    logits: Vec<f32>,
    order: Vec<u32>,
    /// The sampler's draws, when it has a seed.
    rng: Option<rand_mt::Mt>,
    pub(crate) score: ClaimScore,
}

impl Scoring {
    /// The scoring of a request with `params`, in a vocabulary whose end-of-generation
    /// tokens are `eog`.
    pub(crate) fn new(params: &GenerateParams, eog: Vec<i32>) -> Self {
        let sampled = (!params.is_greedy()).then_some((params.top_k as usize, params.top_p, params.temp));
        // u32::MAX asks llama.cpp for a random seed: such draws cannot be known.
        let rng = (sampled.is_some() && params.seed != u32::MAX).then(|| rand_mt::Mt::new(params.seed));
        Self {
            rng,
            sampled,
            penalty: params.repeat_penalty,
            last_n: params.repeat_last_n as usize,
            window: VecDeque::new(),
            counts: HashMap::new(),
            eog,
            logits: Vec::new(),
            order: Vec::new(),
            score: ClaimScore::default(),
        }
    }

    /// Scores one position from its `raw` logits: the `claimed` token, or (`None`) an
    /// end of text there, which the claim stands for when it stops short of the
    /// request's length and of its stop strings.
    pub(crate) fn position(&mut self, raw: &[f32], claimed: Option<i32>) {
        self.logits.clear();
        self.logits.extend_from_slice(raw);
        if self.penalty != 1.0 {
            for &token in self.counts.keys() {
                if let Some(l) = self.logits.get_mut(token as usize) {
                    *l = if *l <= 0.0 { *l * self.penalty } else { *l / self.penalty };
                }
            }
        }
        let logits = &self.logits;
        let token = match claimed {
            Some(t) if (0..logits.len() as i32).contains(&t) => t as usize,
            Some(_) => {
                self.score.positions += 1;
                self.score.worst_gap = f32::INFINITY;
                return;
            }
            None => match self
                .eog
                .iter()
                .map(|&t| t as usize)
                .filter(|&t| t < logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            {
                Some(t) => t,
                None => return,
            },
        };
        self.score.positions += 1;
        let logit = logits[token];
        // The sampler draws once at every position, whatever it keeps.
        let draw = self.rng.as_mut().map(|rng| {
            // libstdc++'s generate_canonical<double, 53> over a 32-bit engine: two draws.
            let (low, high) = (f64::from(rng.next_u32()), f64::from(rng.next_u32()));
            let u = (low + high * 4_294_967_296.0) / 18_446_744_073_709_551_616.0;
            if u >= 1.0 { 1.0 - f64::EPSILON / 2.0 } else { u }
        });
        let Some((top_k, top_p, temp)) = self.sampled else {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            self.score.worst_gap = self.score.worst_gap.max(max - logit);
            return;
        };
        // The candidates top-k keeps, in descending order of logit.
        let n = logits.len();
        let k = if top_k == 0 { n } else { top_k.min(n) };
        self.order.clear();
        self.order.extend(0..n as u32);
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if k < n {
            self.order.select_nth_unstable_by(k - 1, by_logit);
            self.order.truncate(k);
        }
        self.order.sort_unstable_by(by_logit);
        // Top-p, on the penalized logits (before temperature, as the chain runs it).
        let mut kept = self.order.len();
        if top_p < 1.0 {
            let max = logits[self.order[0] as usize];
            let total: f32 = self.order.iter().map(|&t| (logits[t as usize] - max).exp()).sum();
            let mut sum = 0.0f32;
            for (i, &t) in self.order.iter().enumerate() {
                sum += (logits[t as usize] - max).exp() / total;
                if sum >= top_p {
                    kept = i + 1;
                    break;
                }
            }
        }
        let kept = &self.order[..kept];
        let least = logits[*kept.last().expect("at least one kept") as usize];
        if !kept.contains(&(token as u32)) {
            self.score.worst_gap = self.score.worst_gap.max((least - logit).max(0.0));
            if draw.is_some() {
                self.score.draws += 1;
                self.score.draw_misses += 1;
            }
            return;
        }
        // The distribution the draw is made from: the kept candidates at temperature.
        let max = logits[kept[0] as usize] / temp;
        let total: f64 = kept.iter().map(|&t| f64::from(logits[t as usize] / temp - max).exp()).sum();
        let ln_total = total.ln();
        let ln_q = |t: usize| f64::from(logits[t] / temp - max) - ln_total;
        let (mut entropy, mut square) = (0.0f64, 0.0f64);
        for &t in kept {
            let l = ln_q(t as usize);
            let q = l.exp();
            entropy -= q * l;
            square += q * l * l;
        }
        if let Some(u) = draw {
            // The claimed token's share of the distribution, in the order the sampler
            // walks it, against where the draw fell. Top-k or top-p sort the candidates
            // by descending logit (tokens of equal logit are taken together: their order
            // among themselves is the sort's); with neither, they stay in id order.
            let (mut before, mut upto) = (0.0f64, 0.0f64);
            if top_k > 0 || top_p < 1.0 {
                for &t in kept {
                    let (q, l) = (ln_q(t as usize).exp(), logits[t as usize]);
                    if l > logit {
                        before += q;
                    }
                    if l >= logit {
                        upto += q;
                    }
                }
            } else {
                before = (0..token).map(|t| ln_q(t).exp()).sum();
                upto = before + ln_q(token).exp();
            }
            let gap = if u < before { before - u } else { (u - upto).max(0.0) };
            self.score.worst_draw_gap = self.score.worst_draw_gap.max(gap);
            self.score.draws += 1;
            self.score.draw_misses += u64::from(gap > DRAW_ROUNDING);
        }
        self.score.sampled += 1;
        self.score.surprisal -= ln_q(token);
        self.score.entropy += entropy;
        self.score.variance += (square - entropy * entropy).max(0.0);
    }

    /// Takes `token` as the sequence's next (the repeat penalty's window moves on).
    pub(crate) fn accept(&mut self, token: i32) {
        if self.last_n == 0 {
            return;
        }
        *self.counts.entry(token).or_default() += 1;
        if self.window.len() >= self.last_n
            && let Some(old) = self.window.pop_front()
            && let Some(count) = self.counts.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&old);
            }
        }
        self.window.push_back(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temp: f32) -> GenerateParams {
        GenerateParams { temp, top_k: 0, top_p: 1.0, repeat_penalty: 1.0, ..GenerateParams::default() }
    }

    #[test]
    fn greedy_claims_are_scored_by_their_shortfall_below_the_largest_logit() {
        let mut s = Scoring::new(&params(0.0), vec![3]);
        s.position(&[1.0, 4.0, 2.0, 0.5], Some(1));
        assert_eq!(s.score.worst_gap, 0.0);
        s.position(&[1.0, 4.0, 2.0, 0.5], Some(2));
        assert_eq!(s.score.worst_gap, 2.0);
        // An end of text where the model would not end: the end token's shortfall.
        s.position(&[1.0, 4.0, 2.0, 0.5], None);
        assert_eq!((s.score.worst_gap, s.score.positions, s.score.sampled), (3.5, 3, 0));
    }

    #[test]
    fn the_repeat_penalty_applies_to_the_last_tokens_taken_as_llama_cpp_does() {
        let p = GenerateParams { repeat_penalty: 2.0, repeat_last_n: 1, ..params(0.0) };
        let mut s = Scoring::new(&p, vec![]);
        s.accept(1);
        // Token 1's logit 4 becomes 2, so token 2 (3.0) is the greedy pick.
        s.position(&[0.0, 4.0, 3.0], Some(2));
        assert_eq!(s.score.worst_gap, 0.0);
        s.accept(2);
        // The window holds one token: 1 is no longer penalized, 2 is (3.0 / 2).
        s.position(&[0.0, 4.0, 3.0], Some(1));
        assert_eq!(s.score.worst_gap, 0.0);
    }

    #[test]
    fn sampled_claims_outside_top_k_have_a_gap_and_those_inside_a_surprisal() {
        let p = GenerateParams { top_k: 2, ..params(1.0) };
        let mut s = Scoring::new(&p, vec![]);
        s.position(&[0.0, 2.0, 1.0, 0.5], Some(2));
        assert_eq!((s.score.sampled, s.score.worst_gap), (1, 0.0));
        // q(2) = e^1 / (e^2 + e^1)
        let expected = -(1.0f64 - (2.0f64.exp() + 1.0f64.exp()).ln());
        assert!((s.score.surprisal - expected).abs() < 1e-6, "{}", s.score.surprisal);
        assert!(s.score.entropy > 0.0 && s.score.variance > 0.0);
        s.position(&[0.0, 2.0, 1.0, 0.5], Some(3));
        assert_eq!((s.score.sampled, s.score.worst_gap), (1, 0.5));
    }

    #[test]
    fn a_seeded_draw_must_land_on_the_claimed_token() {
        // The first draw of std::mt19937(1234) through uniform_real_distribution<double>
        // is 0.49766366630595166 (g++ 12, libstdc++).
        let p = GenerateParams { seed: 1234, ..params(1.0) };
        // Equal logits: each token holds a quarter; the draw falls in the second.
        let logits = [0.0f32; 4];
        let mut s = Scoring::new(&GenerateParams { top_k: 4, ..p.clone() }, vec![]);
        s.position(&logits, Some(3));
        assert_eq!(s.score.worst_draw_gap, 0.0, "sorted, ties are one block: {:?}", s.score);
        let mut s = Scoring::new(&p, vec![]);
        s.position(&[3.0, 0.0, 0.0, 0.0], Some(0));
        // q(0) = e^3 / (e^3 + 3) ≈ 0.870: the draw (0.498) falls inside.
        assert_eq!(s.score.worst_draw_gap, 0.0);
        let mut s = Scoring::new(&p, vec![]);
        s.position(&[3.0, 0.0, -1.0, -2.0], Some(2));
        // Token 2 starts after 0 and 1, at about 0.977: the draw is about 0.479 before it.
        assert!((s.score.worst_draw_gap - 0.479).abs() < 0.001, "{:?}", s.score);
        // In id order (neither top-k nor top-p): token 3 of four equal ones spans
        // 0.75 to 1, and the draw (0.498) falls about 0.252 before it.
        let mut s = Scoring::new(&p, vec![]);
        s.position(&logits, Some(3));
        assert!((s.score.worst_draw_gap - 0.2523).abs() < 0.001, "{:?}", s.score);
        // Without a seed nothing is known of the draws.
        let mut s = Scoring::new(&params(1.0), vec![]);
        s.position(&[3.0, 0.0, -1.0, -2.0], Some(2));
        assert_eq!(s.score.worst_draw_gap, 0.0);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Softmax of [3, 2, 0, -5]: about 0.70, 0.26, 0.035, 0.0002.
        let p = GenerateParams { top_p: 0.9, ..params(1.0) };
        let mut s = Scoring::new(&p, vec![]);
        s.position(&[3.0, 2.0, 0.0, -5.0], Some(1));
        assert_eq!(s.score.worst_gap, 0.0);
        s.position(&[3.0, 2.0, 0.0, -5.0], Some(2));
        assert_eq!(s.score.worst_gap, 2.0);
    }
}
