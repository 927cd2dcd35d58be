//! Fuzzes the protocol decoder with the structured mutator: `cargo +nightly fuzz run
//! structured` from `fuzz/`.
//!
//! The input's first 8 bytes seed the mutator; the rest, split into frames at every
//! `0xFF 0xFE` pair, is one more starting point next to the valid messages of every type.
//! Each input gives one case; whatever decodes must re-encode to the very same frames.
//! (The workspace's `edgent-edge fuzz` runs the same mutator on stable, with the edge's
//! admission checks on the committed plan.)

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

// Both modules depend only on std, `hex` and `rand`: compile them here without burn.
#[allow(dead_code)]
#[path = "../../runtime/src/wire/protocol.rs"]
mod protocol;

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
    let Some((seed, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut corpus = CORPUS.get_or_init(corpus).clone();
    corpus.add_given(split(rest));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from_le_bytes(*seed));
    let case = corpus.case(&mut rng);
    if let Ok(msg) = protocol::Message::decode(&case.frames) {
        assert_eq!(
            msg.encode().to_vec(),
            case.frames,
            "re-encodes to the same frames"
        );
    }
    let accept = protocol::Accept::requests(128 << 10);
    if let Ok(msg) = protocol::Message::decode_with(&case.frames, &accept) {
        assert_eq!(protocol::Message::decode(&case.frames).ok(), Some(msg));
    }
});
