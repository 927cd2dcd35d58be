//! Every kernel at every instruction set this CPU has, against naive implementations on
//! plain `[C][H][W]` maps (no packing, no blocking): random shapes and values, the shape
//! edge cases named (one input channel, channel counts that do not fill a block, windows
//! that run past the edge in ceil mode).

use kernels::{Conv, Fc, Isa, Lrn, Pool, block_of};
use proptest::prelude::*;

fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn naive_conv(s: Conv, relu: bool, w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; s.oc * s.h * s.w];
    for o in 0..s.oc {
        for r in 0..s.h {
            for c in 0..s.w {
                let mut acc = f64::from(b[o]);
                for i in 0..s.ic {
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let (yy, xx) = (r + ky, c + kx);
                            if yy < s.pad || xx < s.pad || yy - s.pad >= s.h || xx - s.pad >= s.w {
                                continue;
                            }
                            let v = x[(i * s.h + yy - s.pad) * s.w + xx - s.pad];
                            acc +=
                                f64::from(v) * f64::from(w[((o * s.ic + i) * s.k + ky) * s.k + kx]);
                        }
                    }
                }
                let acc = acc as f32;
                y[(o * s.h + r) * s.w + c] = if relu { acc.max(0.0) } else { acc };
            }
        }
    }
    y
}

/// The kernels' convolution on a plain input, through packing, blocking and padding.
fn kernel_conv(isa: Isa, s: Conv, relu: bool, w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    let packed = kernels::pack_conv(s, w);
    let mut blocked = vec![0.0; x.len()];
    kernels::to_blocked(s.ic, s.h * s.w, x, &mut blocked);
    let mut padded = vec![f32::NAN; s.padded_len()];
    kernels::pad(s, &blocked, &mut padded);
    let mut out = vec![f32::NAN; s.oc * s.h * s.w];
    kernels::conv2d(isa, s, relu, &packed, b, &padded, &mut out);
    let mut plain = vec![0.0; out.len()];
    kernels::from_blocked(s.oc, s.h * s.w, &out, &mut plain);
    plain
}

fn check_conv(s: Conv, relu: bool, seed: u64) {
    let w = values(s.oc * s.ic * s.k * s.k, seed, 0.5);
    let b = values(s.oc, seed + 1, 0.5);
    let x = values(s.ic * s.h * s.w, seed + 2, 2.0);
    let want = naive_conv(s, relu, &w, &b, &x);
    for isa in Isa::available() {
        let got = kernel_conv(isa, s, relu, &w, &b, &x);
        let d = rel_diff(&got, &want);
        assert!(
            d <= 1e-5,
            "{isa} conv {s:?} relu {relu}: relative difference {d}"
        );
    }
}

#[test]
fn every_convolution_of_b_alexnet() {
    // (ic, oc, side, k) of the trunk and the branches, first layer with one and three
    // input channels.
    for (i, (ic, oc, side, k)) in [
        (1, 32, 32, 5),
        (3, 32, 32, 5),
        (32, 64, 16, 5),
        (64, 96, 8, 3),
        (96, 96, 8, 3),
        (96, 64, 8, 3),
        (32, 32, 16, 3),
        (32, 32, 8, 3),
        (64, 32, 8, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let s = Conv {
            ic,
            oc,
            h: side,
            w: side,
            k,
            pad: k / 2,
        };
        check_conv(s, i % 2 == 0, i as u64);
    }
}

#[test]
fn shapes_the_simd_kernels_do_not_tile_fall_back() {
    // 10 output channels (no full block), widths that are not a multiple of 8.
    check_conv(
        Conv {
            ic: 3,
            oc: 10,
            h: 5,
            w: 6,
            k: 3,
            pad: 1,
        },
        true,
        7,
    );
    check_conv(
        Conv {
            ic: 16,
            oc: 16,
            h: 4,
            w: 6,
            k: 3,
            pad: 1,
        },
        false,
        8,
    );
    check_conv(
        Conv {
            ic: 16,
            oc: 48,
            h: 3,
            w: 8,
            k: 1,
            pad: 0,
        },
        true,
        9,
    );
    // Widths of 4 and 12: the 4-pixel tile.
    check_conv(
        Conv {
            ic: 3,
            oc: 32,
            h: 4,
            w: 4,
            k: 5,
            pad: 2,
        },
        true,
        10,
    );
    check_conv(
        Conv {
            ic: 16,
            oc: 48,
            h: 3,
            w: 12,
            k: 3,
            pad: 1,
        },
        false,
        11,
    );
}

fn naive_pool(s: Pool, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut y = vec![f32::NEG_INFINITY; s.c * oh * ow];
    for c in 0..s.c {
        for r in 0..oh {
            for q in 0..ow {
                for dy in 0..s.k {
                    for dx in 0..s.k {
                        let (yy, xx) = (r * s.stride + dy, q * s.stride + dx);
                        if yy < s.h && xx < s.w {
                            let m = &mut y[(c * oh + r) * ow + q];
                            *m = m.max(x[(c * s.h + yy) * s.w + xx]);
                        }
                    }
                }
            }
        }
    }
    y
}

fn naive_lrn(s: Lrn, x: &[f32]) -> Vec<f32> {
    let half = s.size / 2;
    let mut y = x.to_vec();
    for c in 0..s.c {
        for p in 0..s.hw {
            let lo = c.saturating_sub(half);
            let hi = (c + half).min(s.c - 1);
            let sum: f64 = (lo..=hi).map(|j| f64::from(x[j * s.hw + p]).powi(2)).sum();
            let d = f64::from(s.k) + f64::from(s.alpha) * sum;
            y[c * s.hw + p] = (f64::from(x[c * s.hw + p]) / d.powf(0.75)) as f32;
        }
    }
    y
}

fn naive_fc(s: Fc, relu: bool, w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    (0..s.outputs)
        .map(|o| {
            let acc: f64 = f64::from(b[o])
                + (0..s.inputs)
                    .map(|i| f64::from(w[o * s.inputs + i]) * f64::from(x[i]))
                    .sum::<f64>();
            let acc = acc as f32;
            if relu { acc.max(0.0) } else { acc }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn convolution_matches_the_naive_one(
        ic in prop::sample::select(vec![1usize, 2, 3, 16, 32]),
        oc in prop::sample::select(vec![8usize, 16, 32, 48, 64]),
        h in 1usize..11,
        w in prop::sample::select(vec![3usize, 4, 8, 12, 16, 24]),
        k in prop::sample::select(vec![1usize, 3, 5]),
        relu: bool,
        seed in 0u64..1000,
    ) {
        check_conv(Conv { ic, oc, h, w, k, pad: k / 2 }, relu, seed);
    }

    #[test]
    fn pooling_matches_the_naive_one(
        c in prop::sample::select(vec![1usize, 3, 16, 32]),
        h in 1usize..18,
        w in 1usize..18,
        k in 1usize..4,
        stride in 1usize..3,
        seed in 0u64..1000,
    ) {
        let s = Pool { c, h, w, k: k.min(h).min(w), stride };
        let x = values(c * h * w, seed, 3.0);
        let want = naive_pool(s, &x);
        let mut blocked = vec![0.0; x.len()];
        kernels::to_blocked(c, h * w, &x, &mut blocked);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; c * s.oh() * s.ow()];
            kernels::max_pool(isa, s, &blocked, &mut out);
            let mut plain = vec![0.0; out.len()];
            kernels::from_blocked(c, s.oh() * s.ow(), &out, &mut plain);
            prop_assert_eq!(&plain, &want, "{} {:?}", isa, s);
        }
    }

    #[test]
    fn lrn_matches_chainers_formula(
        c in prop::sample::select(vec![1usize, 3, 16, 32, 64]),
        hw in 1usize..40,
        size in prop::sample::select(vec![1usize, 3, 5]),
        // ×50 makes α·Σx² comparable with k: the normalisation matters.
        scale in prop::sample::select(vec![1.0f32, 50.0, 500.0]),
        seed in 0u64..1000,
    ) {
        let s = Lrn { c, hw, size, alpha: 5e-5, k: 2.0 };
        let x = values(c * hw, seed, scale);
        let want = naive_lrn(s, &x);
        for isa in Isa::available() {
            let mut blocked = vec![0.0; x.len()];
            kernels::to_blocked(c, hw, &x, &mut blocked);
            let mut scratch = vec![0.0; kernels::lrn_scratch_len(s)];
            kernels::lrn(isa, s, &mut blocked, &mut scratch);
            let mut plain = vec![0.0; x.len()];
            kernels::from_blocked(c, hw, &blocked, &mut plain);
            let d = rel_diff(&plain, &want);
            prop_assert!(d <= 1e-5, "{} {:?}: {}", isa, s, d);
        }
    }

    #[test]
    fn fully_connected_matches_the_naive_one(
        map in prop::sample::select(vec![None, Some([32usize, 4, 4]), Some([3, 2, 5]), Some([64, 1, 1])]),
        inputs in 1usize..300,
        outputs in 1usize..70,
        relu: bool,
        seed in 0u64..1000,
    ) {
        let inputs = map.map_or(inputs, |[c, h, w]| c * h * w);
        let s = Fc { inputs, outputs };
        let w = values(inputs * outputs, seed, 0.3);
        let b = values(outputs, seed + 1, 0.3);
        let mut x = values(inputs, seed + 2, 2.0);
        // Some zeros, as after a ReLU.
        for v in x.iter_mut().step_by(3) {
            *v = 0.0;
        }
        let want = naive_fc(s, relu, &w, &b, &x);
        let input = match map {
            Some([c, h, ww]) => {
                let mut blocked = vec![0.0; x.len()];
                kernels::to_blocked(c, h * ww, &x, &mut blocked);
                blocked
            }
            None => x.clone(),
        };
        let packed = kernels::pack_fc(s, map, &w);
        // Each output against the size of its terms, |b| + Σ|w·x|: a sum that cancels to
        // near zero is not held to a tolerance relative to itself.
        let magnitude: Vec<f32> = (0..outputs)
            .map(|o| b[o].abs() + (0..inputs).map(|i| (w[o * inputs + i] * x[i]).abs()).sum::<f32>())
            .collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; outputs];
            kernels::fc(isa, s, relu, &packed, &b, &input, &mut out);
            for o in 0..outputs {
                let d = (out[o] - want[o]).abs() / magnitude[o].max(1e-12);
                prop_assert!(d <= 1e-5, "{} {:?} output {}: {} vs {} ({})", isa, s, o, out[o], want[o], d);
            }
        }
    }
}

#[test]
fn blocking_round_trips_and_interleaves_sixteen_channels() {
    for c in [1, 3, 16, 48] {
        let hw = 6;
        let x = values(c * hw, c as u64, 1.0);
        let mut blocked = vec![0.0; x.len()];
        kernels::to_blocked(c, hw, &x, &mut blocked);
        if block_of(c) == 16 {
            // Channel 1, pixel 0 sits right after channel 0, pixel 0.
            assert_eq!(blocked[1], x[hw]);
        } else {
            assert_eq!(blocked, x);
        }
        let mut back = vec![0.0; x.len()];
        kernels::from_blocked(c, hw, &blocked, &mut back);
        assert_eq!(back, x);
    }
}

#[test]
fn relu_clamps_at_zero_everywhere() {
    for isa in Isa::available() {
        let mut x = values(37, 1, 1.0);
        let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
        kernels::relu(isa, &mut x);
        assert_eq!(x, want, "{isa}");
    }
}

#[test]
fn instruction_sets_parse_by_name() {
    // The names `EDGENT_ISA` takes (setting the variable here would race the other tests).
    assert_eq!("AVX2".parse::<Isa>(), Ok(Isa::Avx2));
    assert!(
        "sse9"
            .parse::<Isa>()
            .unwrap_err()
            .contains("portable, avx2 or avx512")
    );
    assert!(Isa::available().contains(&Isa::Portable));
}
