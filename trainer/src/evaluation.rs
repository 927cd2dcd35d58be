//! Per-exit test accuracy and BranchyNet's entropy-threshold mode.

use datasets::{Batcher, ImageSet};
use indicatif::ProgressBar;
use runtime::model::entropy::{argmax, entropy_exit};
use runtime::{BranchyAlexNet, NUM_EXITS};
use serde::{Deserialize, Serialize};

/// Test accuracy of one exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitAccuracy {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Fraction of test images classified correctly.
    pub accuracy: f64,
}

/// Entropy-threshold early exit at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntropyPoint {
    /// Entropy threshold in nats: leave at the first exit whose entropy is below it.
    pub threshold: f32,
    /// Accuracy of the decisions.
    pub accuracy: f64,
    /// Fraction of samples leaving at each exit, exit 1 first.
    pub exit_fraction: Vec<f64>,
}

/// Results of evaluating a model on a test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Accuracy of every exit.
    pub exits: Vec<ExitAccuracy>,
    /// The entropy mode at each requested threshold.
    pub entropy: Vec<EntropyPoint>,
}

/// Evaluates every exit of `model` (in inference mode) on `set`.
pub fn evaluate(
    model: &BranchyAlexNet,
    set: &ImageSet,
    batcher: &Batcher,
    batch_size: usize,
    thresholds: &[f32],
    progress: &ProgressBar,
) -> Evaluation {
    // logits[sample][exit] = the exit's logits for that sample.
    let mut logits: Vec<Vec<Vec<f32>>> = Vec::with_capacity(set.len());
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = batcher.batch(set, chunk);
        let outputs: Vec<Vec<f32>> = model
            .forward_all(batch.images)
            .into_iter()
            .map(|t| t.into_data().try_into_vec_as::<f32>().unwrap_or_default())
            .collect();
        let classes = outputs[0].len() / chunk.len();
        for s in 0..chunk.len() {
            logits.push(
                outputs
                    .iter()
                    .map(|o| o[s * classes..(s + 1) * classes].to_vec())
                    .collect(),
            );
        }
        progress.inc(chunk.len() as u64);
    }
    summarize(&logits, &set.labels, thresholds)
}

/// Accuracy per exit and per entropy threshold from per-sample logits of every exit.
pub fn summarize(logits: &[Vec<Vec<f32>>], labels: &[u8], thresholds: &[f32]) -> Evaluation {
    let n = labels.len().max(1) as f64;
    let correct = |s: usize, exit: usize| argmax(&logits[s][exit - 1]) == usize::from(labels[s]);
    let exits = (1..=NUM_EXITS)
        .map(|exit| ExitAccuracy {
            exit,
            accuracy: (0..labels.len()).filter(|&s| correct(s, exit)).count() as f64 / n,
        })
        .collect();
    let entropy = thresholds
        .iter()
        .map(|&threshold| {
            let mut counts = [0usize; NUM_EXITS];
            let mut right = 0;
            for (s, sample) in logits.iter().enumerate().take(labels.len()) {
                let exit = entropy_exit(sample, threshold);
                counts[exit - 1] += 1;
                right += usize::from(correct(s, exit));
            }
            EntropyPoint {
                threshold,
                accuracy: right as f64 / n,
                exit_fraction: counts.iter().map(|&c| c as f64 / n).collect(),
            }
        })
        .collect();
    Evaluation { exits, entropy }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_exits_and_accuracy() {
        let confident = |c: usize| {
            let mut l = vec![0.0; 10];
            l[c] = 40.0;
            l
        };
        let unsure = vec![0.0; 10];
        // Sample 0: exit 1 sure and right. Sample 1: only exit 5 sure, and wrong at exit 1.
        let logits = vec![
            vec![
                confident(1),
                confident(1),
                confident(1),
                confident(1),
                confident(1),
            ],
            vec![
                unsure.clone(),
                unsure.clone(),
                unsure.clone(),
                unsure.clone(),
                confident(2),
            ],
        ];
        let eval = summarize(&logits, &[1, 2], &[0.5]);
        assert_eq!(eval.exits[0].accuracy, 0.5);
        assert_eq!(eval.exits[4].accuracy, 1.0);
        assert_eq!(eval.entropy[0].exit_fraction, vec![0.5, 0.0, 0.0, 0.0, 0.5]);
        assert_eq!(eval.entropy[0].accuracy, 1.0);
    }
}
