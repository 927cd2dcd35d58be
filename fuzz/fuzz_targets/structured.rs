//! Fuzzes the protocol decoder with the structured mutator: `cargo +nightly fuzz run
//! structured` from `fuzz/`.
//!
//! The input's first 8 bytes seed the mutator; the rest, split into frames at every
//! `0xFF 0xFE` pair, is one more starting point next to the valid messages of every type.
//! Each input gives one case; whatever decodes must re-encode to the very same frames (a
//! compressed payload: to frames that decode to the same message).
//! (The workspace's `edgent-edge fuzz` runs the same mutator on stable, with the edge's
//! admission checks on the committed plan.)

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

// These modules depend only on std, `hex`, `half`, `serde`, `zstd` and `rand`: compile
// them here without burn.
#[allow(dead_code)]
#[path = "../../runtime/src/wire/protocol.rs"]
mod protocol;

#[allow(dead_code)]
#[path = "../../runtime/src/wire/encoding.rs"]
mod encoding;

#[allow(dead_code)]
#[path = "../../runtime/src/wire/mutate.rs"]
mod mutate;

/// Shapes like the committed plan's (B-AlexNet on 1×32×32 images, 10 classes): a few
/// boundaries of the shallowest and the deepest exit. The decoder does not know the plan.
fn corpus() -> mutate::Corpus {
    let shapes = mutate::Shapes {
        digest: [0x5A; 32],
        input: vec![1, 32, 32],
        classes: 10,
        boundaries: vec![
            vec![
                vec![1, 32, 32],
                vec![32, 32, 32],
                vec![32, 16, 16],
                vec![32, 4, 4],
            ],
            vec![
                vec![1, 32, 32],
                vec![96, 8, 8],
                vec![64, 4, 4],
                vec![256],
                vec![128],
            ],
        ],
        max_payload: 128 << 10,
    };
    mutate::Corpus::new(shapes, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
}

fn split(data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xFF && data[i + 1] == 0xFE {
            frames.push(data[start..i].to_vec());
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    frames.push(data[start..].to_vec());
    frames
}

static CORPUS: OnceLock<mutate::Corpus> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    use rand::Rng;
    let Some((seed, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let corpus = CORPUS.get_or_init(corpus);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from_le_bytes(*seed));
    // The input's frames, mutated, 3 times in 100 (as `Corpus::case` picks given frames);
    // else a case from the valid messages.
    let frames = if !rest.is_empty() && rng.random_ratio(3, 100) {
        let mut frames = split(rest);
        corpus.mutate(&mut frames, &mut rng);
        frames
    } else {
        corpus.case(&mut rng).frames
    };
    if let Ok(msg) = protocol::Message::decode(&frames) {
        let again = msg.encode().to_vec();
        if msg.header.compressed {
            assert_eq!(again[0], frames[0], "re-encodes to the same header");
            assert_eq!(protocol::Message::decode(&again).ok(), Some(msg));
        } else {
            assert_eq!(again, frames, "re-encodes to the same frames");
        }
    }
    let accept = protocol::Accept::requests(128 << 10);
    if let Ok(msg) = protocol::Message::decode_with(&frames, &accept) {
        assert_eq!(protocol::Message::decode(&frames).ok(), Some(msg));
    }
});
