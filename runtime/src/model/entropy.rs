//! BranchyNet's entropy criterion for leaving at an early exit.

/// Softmax of `logits` and its entropy in nats.
pub fn softmax_entropy(logits: &[f32]) -> (Vec<f32>, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let probs: Vec<f32> = exps.iter().map(|e| e / sum).collect();
    let entropy = -probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * p.ln())
        .sum::<f32>();
    (probs, entropy)
}

/// Index of the largest value (the predicted class); 0 for an empty slice.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// The exit (1-based) a sample leaves at: the first whose entropy is below `threshold`,
/// else the last. `logits[i]` are the logits of exit `i + 1`.
pub fn entropy_exit(logits: &[Vec<f32>], threshold: f32) -> usize {
    logits
        .iter()
        .position(|l| softmax_entropy(l).1 < threshold)
        .map_or(logits.len(), |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_has_maximal_entropy_and_confident_has_little() {
        let (p, h) = softmax_entropy(&[0.0; 10]);
        assert!((p[3] - 0.1).abs() < 1e-6);
        assert!((h - 10f32.ln()).abs() < 1e-5);
        let (_, h) = softmax_entropy(&[20.0, 0.0, 0.0]);
        assert!(h < 1e-6);
    }

    #[test]
    fn exits_at_first_confident_head() {
        let unsure = vec![0.0; 10];
        let mut sure = vec![0.0; 10];
        sure[4] = 30.0;
        let logits = vec![unsure.clone(), sure.clone(), unsure.clone()];
        assert_eq!(entropy_exit(&logits, 0.1), 2);
        assert_eq!(entropy_exit(&[unsure.clone(), unsure], 0.1), 2);
        assert_eq!(entropy_exit(&[sure], 0.1), 1);
        assert_eq!(argmax(&[1.0, 5.0, 2.0]), 1);
    }
}
