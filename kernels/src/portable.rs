//! The portable kernels: the reference every SIMD version is tested against, and the bodies
//! that `multiversion!` compiles once per instruction set. `FMA` says whether the body runs
//! where fused multiply-add is a single instruction (with it, `mul_add`; without, a
//! multiplication and an addition, as `mul_add` would call a slow library routine).

use crate::{BLOCK, Conv, ConvShape, Fc, Lrn, Pool, block_of};

/// `a·b + c`, fused where the instruction set has it.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Direct convolution, one output block of 16 channels and one pixel at a time.
pub fn conv2d<S: ConvShape>(
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    let s: Conv = shape.get();
    let (ib, ob_lanes) = (block_of(s.ic), block_of(s.oc));
    let (hp, wp, kk) = (s.hp(), s.wp(), s.k * s.k);
    for ob in 0..s.oc.div_ceil(BLOCK) {
        let lanes = BLOCK.min(s.oc - ob * BLOCK);
        let wb = &weights[ob * s.ic * kk * BLOCK..(ob + 1) * s.ic * kk * BLOCK];
        for y in 0..s.h {
            for x in 0..s.w {
                let mut acc = [0.0f32; BLOCK];
                acc[..lanes].copy_from_slice(&bias[ob * BLOCK..ob * BLOCK + lanes]);
                for ic in 0..s.ic {
                    let plane = &padded[(ic / ib) * hp * wp * ib + ic % ib..];
                    let wic = &wb[ic * kk * BLOCK..(ic + 1) * kk * BLOCK];
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let v = plane[((y + ky) * wp + x + kx) * ib];
                            let w = &wic[(ky * s.k + kx) * BLOCK..(ky * s.k + kx + 1) * BLOCK];
                            for (a, &w) in acc.iter_mut().zip(w) {
                                *a += v * w;
                            }
                        }
                    }
                }
                for (lane, &a) in acc[..lanes].iter().enumerate() {
                    let o = ob * BLOCK + lane;
                    let at = ((o / ob_lanes) * s.h * s.w + y * s.w + x) * ob_lanes + o % ob_lanes;
                    out[at] = if relu { a.max(0.0) } else { a };
                }
            }
        }
    }
}

/// Max-pooling in ceil mode over a blocked map, all lanes of a block at once.
#[inline(always)]
pub fn max_pool<const FMA: bool>(shape: Pool, src: &[f32], out: &mut [f32]) {
    if block_of(shape.c) == BLOCK {
        pool_blocks::<BLOCK>(shape, src, out);
    } else {
        pool_blocks::<1>(shape, src, out);
    }
}

/// [`max_pool`] for a block size known at compile time: each window's maximum is taken over
/// `B` lanes at once (one vector instruction per input pixel when `B` = 16).
#[inline(always)]
fn pool_blocks<const B: usize>(shape: Pool, src: &[f32], out: &mut [f32]) {
    let (oh, ow) = (shape.oh(), shape.ow());
    let (h, w) = (shape.h, shape.w);
    for g in 0..shape.c / B {
        let plane = &src[g * h * w * B..(g + 1) * h * w * B];
        let oplane = &mut out[g * oh * ow * B..(g + 1) * oh * ow * B];
        for oy in 0..oh {
            let (y0, y1) = (oy * shape.stride, (oy * shape.stride + shape.k).min(h));
            for ox in 0..ow {
                let (x0, x1) = (ox * shape.stride, (ox * shape.stride + shape.k).min(w));
                let mut m = [f32::NEG_INFINITY; B];
                for y in y0..y1 {
                    for x in x0..x1 {
                        let at = (y * w + x) * B;
                        let v: &[f32; B] = plane[at..at + B].try_into().expect("B lanes");
                        for (m, &v) in m.iter_mut().zip(v) {
                            *m = if v > *m { v } else { *m };
                        }
                    }
                }
                let at = (oy * ow + ox) * B;
                oplane[at..at + B].copy_from_slice(&m);
            }
        }
    }
}

/// Scratch [`lrn`] needs: one pixel's channels, their squares with `size / 2` zeros on each
/// side, and their window sums.
pub const fn lrn_scratch_len(shape: Lrn) -> usize {
    3 * shape.c + shape.size
}

/// LRN in place. Blocked maps (16 channels a block) with a window of 3 or 5 are normalised
/// 16 channels at a time: the window sums come from the block's squares and its two
/// neighbours' at the same pixel, shuffled lane by lane (constant patterns, so vector
/// permutes), square roots and divisions on whole vectors. Other maps go pixel by pixel
/// through a line of all their channels.
#[inline(always)]
pub fn lrn<const FMA: bool>(shape: Lrn, x: &mut [f32], scratch: &mut [f32]) {
    match (block_of(shape.c) == BLOCK, shape.size) {
        (true, 3) => lrn_blocks::<FMA, 1>(shape, x),
        (true, 5) => lrn_blocks::<FMA, 2>(shape, x),
        _ => lrn_lines::<FMA>(shape, x, scratch),
    }
}

/// `v · (k + α·sum)^−0.75`, as `v · r·√r` with `r = (k + α·sum)^−0.5`.
#[inline(always)]
fn normalise<const FMA: bool>(v: f32, sum: f32, alpha: f32, k: f32) -> f32 {
    let r = 1.0 / madd::<FMA>(alpha, sum, k).sqrt();
    v * (r * r.sqrt())
}

/// [`lrn`] of a map blocked by 16 channels, window `2·HALF + 1`.
#[inline(always)]
fn lrn_blocks<const FMA: bool, const HALF: usize>(shape: Lrn, x: &mut [f32]) {
    let Lrn {
        c, hw, alpha, k, ..
    } = shape;
    let blocks = c / BLOCK;
    let squares = |x: &[f32], g: usize, p: usize| -> [f32; BLOCK] {
        let v: &[f32; BLOCK] = x[(g * hw + p) * BLOCK..][..BLOCK]
            .try_into()
            .expect("a block");
        v.map(|v| v * v)
    };
    for p in 0..hw {
        let mut left = [0.0f32; BLOCK];
        let mut here = squares(x, 0, p);
        for g in 0..blocks {
            let right = if g + 1 < blocks {
                squares(x, g + 1, p)
            } else {
                [0.0; BLOCK]
            };
            // Channel l + o − HALF of the three blocks, for each lane l and offset o.
            let sum: [f32; BLOCK] = std::array::from_fn(|l| {
                let mut s = 0.0;
                for o in 0..=2 * HALF {
                    let j = l + o;
                    s += if j < HALF {
                        left[BLOCK + j - HALF]
                    } else if j < BLOCK + HALF {
                        here[j - HALF]
                    } else {
                        right[j - HALF - BLOCK]
                    };
                }
                s
            });
            let at = (g * hw + p) * BLOCK;
            for (v, &s) in x[at..at + BLOCK].iter_mut().zip(&sum) {
                *v = normalise::<FMA>(*v, s, alpha, k);
            }
            (left, here) = (here, right);
        }
    }
}

/// [`lrn`] pixel by pixel through a line of all channels (maps not blocked by 16).
#[inline(always)]
fn lrn_lines<const FMA: bool>(shape: Lrn, x: &mut [f32], scratch: &mut [f32]) {
    let Lrn {
        c,
        hw,
        size,
        alpha,
        k,
    } = shape;
    let b = block_of(c);
    let half = size / 2;
    let (line, rest) = scratch.split_at_mut(c);
    let (squares, sums) = rest.split_at_mut(c + 2 * half);
    let sums = &mut sums[..c];
    squares.fill(0.0);
    for p in 0..hw {
        for g in 0..c / b {
            line[g * b..(g + 1) * b].copy_from_slice(&x[(g * hw + p) * b..(g * hw + p + 1) * b]);
        }
        for (s, &v) in squares[half..half + c].iter_mut().zip(line.iter()) {
            *s = v * v;
        }
        sums.fill(0.0);
        for offset in 0..size {
            for (sum, &s) in sums.iter_mut().zip(&squares[offset..offset + c]) {
                *sum += s;
            }
        }
        for (v, &sum) in line.iter_mut().zip(sums.iter()) {
            *v = normalise::<FMA>(*v, sum, alpha, k);
        }
        for g in 0..c / b {
            x[(g * hw + p) * b..(g * hw + p + 1) * b].copy_from_slice(&line[g * b..(g + 1) * b]);
        }
    }
}

/// GEMV on transposed weights: `out = bias + Σ_i x[i]·Wᵀ[i]`, row by row (zeros skipped:
/// after a ReLU, most rows).
#[inline(always)]
pub fn fc<const FMA: bool>(
    shape: Fc,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    x: &[f32],
    out: &mut [f32],
) {
    let Fc { inputs, outputs } = shape;
    let out = &mut out[..outputs];
    out.copy_from_slice(&bias[..outputs]);
    for (i, &xi) in x[..inputs].iter().enumerate() {
        if xi == 0.0 {
            continue;
        }
        let row = &weights[i * outputs..(i + 1) * outputs];
        for (o, &w) in out.iter_mut().zip(row) {
            *o = madd::<FMA>(xi, w, *o);
        }
    }
    if relu {
        for o in out.iter_mut() {
            *o = o.max(0.0);
        }
    }
}

/// ReLU in place.
#[inline(always)]
pub fn relu<const FMA: bool>(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}
