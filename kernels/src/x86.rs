//! x86-64 kernels: convolution with AVX-512 and AVX2+FMA intrinsics, and the target-feature
//! wrappers that compile the portable bodies for those instruction sets. The only module of
//! the project with `unsafe`: intrinsics that read and write through raw pointers, and calls
//! of functions that need CPU features. Each block says why it is sound; the tests compare
//! every version with the portable reference.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::{BLOCK, ConvShape, Isa, block_of};

/// The portable bodies of the simple kernels compiled for one instruction set: each a
/// `#[target_feature]` function that calls the `#[inline(always)]` body directly (so the body
/// is compiled with those features and vectorised for them), behind a safe function that
/// checks the CPU first.
macro_rules! compiled_for {
    ($module:ident, $isa:expr, $features:literal) => {
        /// The simple kernels compiled for this instruction set.
        pub mod $module {
            use super::*;
            use crate::{Fc, Lrn, Pool, portable};

            compiled_for!(@kernel $isa, $features, max_pool(shape: Pool, src: &[f32], out: &mut [f32]));
            compiled_for!(@kernel $isa, $features, lrn(shape: Lrn, x: &mut [f32], scratch: &mut [f32]));
            compiled_for!(@kernel $isa, $features, fc(shape: Fc, relu: bool, weights: &[f32], bias: &[f32], x: &[f32], out: &mut [f32]));
            compiled_for!(@kernel $isa, $features, relu(x: &mut [f32]));
        }
    };
    (@kernel $isa:expr, $features:literal, $name:ident($($arg:ident: $ty:ty),*)) => {
        /// The portable kernel of the same name, compiled for this instruction set.
        pub fn $name($($arg: $ty),*) {
            #[target_feature(enable = $features)]
            fn compiled($($arg: $ty),*) {
                portable::$name::<true>($($arg),*)
            }
            assert!($isa.supported(), "{} kernels on a CPU without {}", $isa, $isa);
            // SAFETY: the CPU has the instruction set's features (checked above); AVX-512 F
            // implies AVX2 and FMA.
            unsafe { compiled($($arg),*) }
        }
    };
}

compiled_for!(avx512, Isa::Avx512, "avx512f,avx2,fma");
compiled_for!(avx2, Isa::Avx2, "avx2,fma");

/// Checks what both SIMD convolutions rely on: the shapes tile, the buffers are long enough.
fn check_conv<S: ConvShape>(shape: S, weights: &[f32], bias: &[f32], padded: &[f32], out: &[f32]) {
    let s = shape.get();
    assert!(
        s.tiles(),
        "conv2d SIMD kernel on shapes it does not tile: {s:?}"
    );
    let [packed, padded_len, out_len] = s.lens().expect("conv2d: the buffers overflow usize");
    assert!(weights.len() >= packed && bias.len() >= s.oc);
    assert!(padded.len() >= padded_len && out.len() >= out_len);
}

/// Convolution with AVX-512: a tile of 32 output channels (two registers) × 8 pixels of a
/// row (4 where 8 does not divide the width), 16 accumulators; per kernel tap two weight loads and eight broadcasts feed 16 FMAs.
pub fn conv2d_avx512<S: ConvShape>(
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    check_conv(shape, weights, bias, padded, out);
    assert!(
        Isa::Avx512.supported(),
        "AVX-512 kernel on a CPU without AVX-512"
    );
    // SAFETY: the CPU has AVX-512 F; the shapes tile (4 divides the width, and 8 does for
    // the 8-pixel tile) and the buffers are as long as they need (checked above), which is
    // the kernel's contract.
    unsafe {
        if shape.get().w.is_multiple_of(8) {
            conv_avx512::<S, 8>(shape, relu, weights, bias, padded, out)
        } else {
            conv_avx512::<S, 4>(shape, relu, weights, bias, padded, out)
        }
    }
}

/// # Safety
/// The CPU has AVX-512 F; `shape.get().tiles()` and `PX` divides the width; `weights`,
/// `bias`, `padded`, `out` hold at least `packed_len`, `oc`, `padded_len` and `oc·h·w`
/// elements.
#[target_feature(enable = "avx512f")]
unsafe fn conv_avx512<S: ConvShape, const PX: usize>(
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    let s = shape.get();
    let ib = block_of(s.ic);
    let (hp, wp, kk) = (s.hp(), s.wp(), s.k * s.k);
    let (xs, ws, os) = (padded.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    let zero = _mm512_setzero_ps();
    // Output blocks in pairs, and a last single one when there is an odd number.
    let blocks = s.oc / BLOCK;
    let mut ob = 0;
    while ob < blocks {
        let pair = ob + 1 < blocks;
        // SAFETY: ob·16 + 16 ≤ oc ≤ bias.len(), and with `pair` ob·16 + 32 ≤ oc.
        let (b0, b1) = unsafe {
            let b0 = _mm512_loadu_ps(bias.as_ptr().add(ob * BLOCK));
            (
                b0,
                if pair {
                    _mm512_loadu_ps(bias.as_ptr().add((ob + 1) * BLOCK))
                } else {
                    zero
                },
            )
        };
        let w0 = ob * s.ic * kk * BLOCK;
        let w1 = if pair {
            (ob + 1) * s.ic * kk * BLOCK
        } else {
            w0
        };
        for y in 0..s.h {
            for x0 in (0..s.w).step_by(PX) {
                let mut a0 = [b0; PX];
                let mut a1 = [b1; PX];
                for ic in 0..s.ic {
                    let plane = (ic / ib) * hp * wp * ib + ic % ib;
                    for ky in 0..s.k {
                        let row = plane + ((y + ky) * wp + x0) * ib;
                        for kx in 0..s.k {
                            let tap = (ic * kk + ky * s.k + kx) * BLOCK;
                            // SAFETY: tap + 16 ≤ ic·k²·16 per block, so w0 + tap + 16 and
                            // w1 + tap + 16 ≤ packed_len (w1 = w0 without a pair).
                            let (v0, v1) = unsafe {
                                (
                                    _mm512_loadu_ps(ws.add(w0 + tap)),
                                    _mm512_loadu_ps(ws.add(w1 + tap)),
                                )
                            };
                            for c in 0..PX {
                                // SAFETY: y + ky ≤ h − 1 + k − 1 = hp − 1 (k = 2·pad + 1) and
                                // x0 + c + kx ≤ w − 1 + k − 1 = wp − 1 (PX divides w): the
                                // element lies inside channel `ic`'s padded plane.
                                let v = unsafe { _mm512_set1_ps(*xs.add(row + (c + kx) * ib)) };
                                a0[c] = _mm512_fmadd_ps(v, v0, a0[c]);
                                a1[c] = _mm512_fmadd_ps(v, v1, a1[c]);
                            }
                        }
                    }
                }
                for c in 0..PX {
                    let at = (y * s.w + x0 + c) * BLOCK;
                    let (r0, r1) = if relu {
                        (_mm512_max_ps(a0[c], zero), _mm512_max_ps(a1[c], zero))
                    } else {
                        (a0[c], a1[c])
                    };
                    // SAFETY: block ob (and ob + 1 with a pair) < oc / 16, pixel
                    // (y, x0 + c) < h·w: within the oc·h·w outputs.
                    unsafe {
                        _mm512_storeu_ps(os.add(ob * s.h * s.w * BLOCK + at), r0);
                        if pair {
                            _mm512_storeu_ps(os.add((ob + 1) * s.h * s.w * BLOCK + at), r1);
                        }
                    }
                }
            }
        }
        ob += if pair { 2 } else { 1 };
    }
}

/// Convolution with AVX2+FMA: a tile of 16 output channels (two registers) × 4 pixels of a
/// row, 8 accumulators.
pub fn conv2d_avx2<S: ConvShape>(
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    check_conv(shape, weights, bias, padded, out);
    assert!(
        Isa::Avx2.supported(),
        "AVX2 kernel on a CPU without AVX2 and FMA"
    );
    // SAFETY: the CPU has AVX2 and FMA; the shapes tile and the buffers are as long as they
    // need (both checked above), which is the kernel's contract.
    unsafe { conv_avx2(shape, relu, weights, bias, padded, out) }
}

/// # Safety
/// The CPU has AVX2 and FMA; `shape.get().tiles()`; `weights`, `bias`, `padded`, `out` hold
/// at least `packed_len`, `oc`, `padded_len` and `oc·h·w` elements.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_avx2<S: ConvShape>(
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    let s = shape.get();
    let ib = block_of(s.ic);
    let (hp, wp, kk) = (s.hp(), s.wp(), s.k * s.k);
    let (xs, ws, os) = (padded.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    let zero = _mm256_setzero_ps();
    for ob in 0..s.oc / BLOCK {
        // SAFETY: ob·16 + 16 ≤ oc ≤ bias.len().
        let (blo, bhi) = unsafe {
            let at = bias.as_ptr().add(ob * BLOCK);
            (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)))
        };
        let wb = ob * s.ic * kk * BLOCK;
        for y in 0..s.h {
            for x0 in (0..s.w).step_by(4) {
                let mut lo = [blo; 4];
                let mut hi = [bhi; 4];
                for ic in 0..s.ic {
                    let plane = (ic / ib) * hp * wp * ib + ic % ib;
                    for ky in 0..s.k {
                        let row = plane + ((y + ky) * wp + x0) * ib;
                        for kx in 0..s.k {
                            let tap = wb + (ic * kk + ky * s.k + kx) * BLOCK;
                            // SAFETY: tap + 16 ≤ (ob + 1)·ic·k²·16 ≤ packed_len.
                            let (vlo, vhi) = unsafe {
                                (
                                    _mm256_loadu_ps(ws.add(tap)),
                                    _mm256_loadu_ps(ws.add(tap + 8)),
                                )
                            };
                            for c in 0..4 {
                                // SAFETY: as in the AVX-512 kernel, y + ky ≤ hp − 1 and
                                // x0 + c + kx ≤ wp − 1 (4 divides w).
                                let v = unsafe { _mm256_set1_ps(*xs.add(row + (c + kx) * ib)) };
                                lo[c] = _mm256_fmadd_ps(v, vlo, lo[c]);
                                hi[c] = _mm256_fmadd_ps(v, vhi, hi[c]);
                            }
                        }
                    }
                }
                for c in 0..4 {
                    let at = ob * s.h * s.w * BLOCK + (y * s.w + x0 + c) * BLOCK;
                    let (rlo, rhi) = if relu {
                        (_mm256_max_ps(lo[c], zero), _mm256_max_ps(hi[c], zero))
                    } else {
                        (lo[c], hi[c])
                    };
                    // SAFETY: block ob < oc / 16 and pixel (y, x0 + c) < h·w: the 16 lanes
                    // lie within the oc·h·w outputs.
                    unsafe {
                        _mm256_storeu_ps(os.add(at), rlo);
                        _mm256_storeu_ps(os.add(at + 8), rhi);
                    }
                }
            }
        }
    }
}
