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
    let b = block_of(shape.c);
    let (oh, ow) = (shape.oh(), shape.ow());
    for g in 0..shape.c / b {
        let plane = &src[g * shape.h * shape.w * b..(g + 1) * shape.h * shape.w * b];
        let oplane = &mut out[g * oh * ow * b..(g + 1) * oh * ow * b];
        for oy in 0..oh {
            let (y0, y1) = (
                oy * shape.stride,
                (oy * shape.stride + shape.k).min(shape.h),
            );
            for ox in 0..ow {
                let (x0, x1) = (
                    ox * shape.stride,
                    (ox * shape.stride + shape.k).min(shape.w),
                );
                let at = (oy * ow + ox) * b;
                let m = &mut oplane[at..at + b];
                m.fill(f32::NEG_INFINITY);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let at = (y * shape.w + x) * b;
                        for (m, &v) in m.iter_mut().zip(&plane[at..at + b]) {
                            *m = if v > *m { v } else { *m };
                        }
                    }
                }
            }
        }
    }
}

/// Scratch [`lrn`] needs: one pixel's channels, and their squares with `size / 2` zeros on
/// each side.
pub const fn lrn_scratch_len(shape: Lrn) -> usize {
    2 * shape.c + shape.size
}

/// LRN in place: for every pixel, its channels are gathered into a line (16 at a time from
/// the blocked layout), normalised with a sliding sum of squares, and scattered back.
#[inline(always)]
pub fn lrn<const FMA: bool>(shape: Lrn, x: &mut [f32], scratch: &mut [f32]) {
    let Lrn {
        c,
        hw,
        size,
        alpha,
        k,
    } = shape;
    let b = block_of(c);
    let half = size / 2;
    let (line, squares) = scratch.split_at_mut(c);
    let squares = &mut squares[..c + 2 * half];
    squares.fill(0.0);
    for p in 0..hw {
        for g in 0..c / b {
            line[g * b..(g + 1) * b].copy_from_slice(&x[(g * hw + p) * b..(g * hw + p + 1) * b]);
        }
        for (s, &v) in squares[half..half + c].iter_mut().zip(line.iter()) {
            *s = v * v;
        }
        for (ch, v) in line.iter_mut().enumerate() {
            let mut sum = 0.0;
            for s in &squares[ch..ch + size] {
                sum += s;
            }
            // d^−0.75 = r·√r with r = d^−0.5.
            let r = 1.0 / madd::<FMA>(alpha, sum, k).sqrt();
            *v *= r * r.sqrt();
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
