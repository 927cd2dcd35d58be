//! The lower envelope of an exit's partitions over x = 1/B (DESIGN.md §5).
//!
//! For a remote partition `p < N`, the predicted latency without the round trip is the line
//! `y_p(x) = a_p + b_p·x` with `a_p = device_ms + edge_ms` and `b_p = bytes·8000` (ms per
//! second-per-bit), x = 1/B in seconds per bit. The round trip is the same for every remote
//! partition, so it does not move the envelope. The envelope is computed once, at build
//! time; at run time a decision walks a handful of segments instead of every partition.

/// The lower envelope of the lines `y_p(x) = a_p + b_p·x` over `x ≥ 0`, as segments
/// `(from_x, p)` ordered by `from_x`: from `from_x` on (up to the next segment), line `p` is
/// the lowest. `lines[p] = (a_p, b_p)`; pass the partitions `p < N` only (the device-only
/// partition does not depend on x and is compared separately).
///
/// The first segment starts at `0.0`. Where several lines are lowest together the smallest
/// `p` wins, like an `argmin` that keeps the first minimum: identical lines give the smaller
/// `p`, and at `x = 0` itself the smallest `p` with the least intercept is taken even when a
/// line with a smaller slope takes over just after (that line then starts at the smallest
/// positive `f64`). At a crossing of two lines further right, the segment starting there is
/// taken (the two lines are equal there, up to rounding).
///
/// Lines must be finite. No lines give no segments.
pub fn lower_envelope(lines: &[(f64, f64)]) -> Vec<(f64, usize)> {
    if lines.is_empty() {
        return Vec::new();
    }
    // At x = 0: the first line with the least intercept, as a first-minimum argmin finds it.
    let mut at_zero = 0;
    for p in 1..lines.len() {
        if lines[p].0 < lines[at_zero].0 {
            at_zero = p;
        }
    }
    // Just right of 0: among the least intercepts, the least slope (then the smallest p).
    let least_a = lines[at_zero].0;
    let mut current = at_zero;
    for p in at_zero + 1..lines.len() {
        if lines[p].0 == least_a && lines[p].1 < lines[current].1 {
            current = p;
        }
    }
    let mut segments = vec![(0.0, at_zero)];
    if current != at_zero {
        segments.push((f64::from_bits(1), current));
    }
    let mut x = 0.0_f64;
    loop {
        let (a_c, b_c) = lines[current];
        // The next line to go below the current one: only a smaller slope ever does. The
        // first crossing wins; several lines crossing there are beaten, after it, by the one
        // with the least slope; identical lines by the smallest p.
        let next = (0..lines.len())
            .filter(|&q| lines[q].1 < b_c)
            .map(|q| {
                let (a_q, b_q) = lines[q];
                ((a_q - a_c) / (b_c - b_q), q)
            })
            .min_by(|&(x_p, p), &(x_q, q)| {
                x_p.total_cmp(&x_q)
                    .then(lines[p].1.total_cmp(&lines[q].1))
                    .then(p.cmp(&q))
            });
        let Some((crossing, q)) = next else {
            break;
        };
        // Rounding can put the crossing a hair left of where the current line took over.
        let from_x = crossing.max(x);
        match segments.last_mut() {
            Some(last) if last.0 >= from_x => last.1 = q,
            _ => segments.push((from_x, q)),
        }
        current = q;
        x = from_x;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The partition the envelope gives at `x`: the last segment with `from_x <= x`, as
    /// `runtime::plan::ExitTable::best` reads it.
    fn lookup(segments: &[(f64, usize)], x: f64) -> usize {
        let mut p = segments[0].1;
        for &(from_x, q) in &segments[1..] {
            if from_x > x {
                break;
            }
            p = q;
        }
        p
    }

    fn value(lines: &[(f64, f64)], p: usize, x: f64) -> f64 {
        lines[p].0 + lines[p].1 * x
    }

    /// The first minimum over every line.
    fn brute_force(lines: &[(f64, f64)], x: f64) -> usize {
        let mut best = 0;
        for p in 1..lines.len() {
            if value(lines, p, x) < value(lines, best, x) {
                best = p;
            }
        }
        best
    }

    fn assert_well_formed(lines: &[(f64, f64)], segments: &[(f64, usize)]) {
        assert_eq!(segments[0].0, 0.0, "{segments:?}");
        for pair in segments.windows(2) {
            assert!(pair[0].0 < pair[1].0, "from_x not increasing: {segments:?}");
            assert!(
                lines[pair[1].1].1 < lines[pair[0].1].1,
                "slopes not decreasing: {segments:?}"
            );
        }
    }

    #[test]
    fn no_lines_no_segments() {
        assert!(lower_envelope(&[]).is_empty());
    }

    #[test]
    fn one_line_is_the_whole_envelope() {
        assert_eq!(lower_envelope(&[(3.0, 8.0)]), vec![(0.0, 0)]);
    }

    #[test]
    fn two_crossing_lines() {
        // y0 = 10 + 0x, y1 = 2 + 4x: cross at x = 2.
        assert_eq!(
            lower_envelope(&[(10.0, 0.0), (2.0, 4.0)]),
            vec![(0.0, 1), (2.0, 0)]
        );
    }

    #[test]
    fn a_dominated_line_never_appears() {
        // y1 is above y0 everywhere; y2 takes over at x = 1.
        let lines = [(1.0, 4.0), (5.0, 4.0), (3.0, 2.0)];
        assert_eq!(lower_envelope(&lines), vec![(0.0, 0), (1.0, 2)]);
    }

    #[test]
    fn three_lines_in_turn() {
        // Typical shape: raw upload (small a, large b), a mid split, device-heavy split.
        let lines = [(1.0, 100.0), (5.0, 10.0), (20.0, 1.0)];
        let segments = lower_envelope(&lines);
        // y0 = y1 at x = 4/90; y1 = y2 at x = 15/9.
        assert_eq!(segments, vec![(0.0, 0), (4.0 / 90.0, 1), (15.0 / 9.0, 2)]);
    }

    #[test]
    fn a_line_skipped_by_a_steeper_drop() {
        // y1 would take over from y0 at x = 1, but y2 already did at x = 0.5.
        let lines = [(0.0, 10.0), (5.0, 5.0), (4.0, 2.0)];
        assert_eq!(lower_envelope(&lines), vec![(0.0, 0), (0.5, 2)]);
    }

    #[test]
    fn identical_lines_give_the_smaller_partition() {
        let lines = [(9.0, 0.0), (2.0, 3.0), (2.0, 3.0), (1.0, 5.0), (1.0, 5.0)];
        let segments = lower_envelope(&lines);
        assert_eq!(segments, vec![(0.0, 3), (0.5, 1), (7.0 / 3.0, 0)]);
    }

    #[test]
    fn equal_intercepts_at_zero_keep_the_first_partition() {
        // At x = 0 both are 1: p = 0 wins there; just after, the flatter p = 1.
        let lines = [(1.0, 5.0), (1.0, 2.0)];
        let segments = lower_envelope(&lines);
        assert_eq!(segments, vec![(0.0, 0), (f64::from_bits(1), 1)]);
        assert_eq!(lookup(&segments, 0.0), 0);
        assert_eq!(lookup(&segments, 1e-9), 1);
        // The other way round the flatter line is also the first.
        assert_eq!(lower_envelope(&[(1.0, 2.0), (1.0, 5.0)]), vec![(0.0, 0)]);
    }

    #[test]
    fn several_lines_crossing_at_one_point() {
        // All three meet at x = 1 (y = 2); after it the flattest wins.
        let lines = [(0.0, 2.0), (1.0, 1.0), (2.0, 0.0)];
        assert_eq!(lower_envelope(&lines), vec![(0.0, 0), (1.0, 2)]);
    }

    #[test]
    fn realistic_bytes_and_milliseconds() {
        // u8 image upload, then f32 activations, slopes bytes·8000 in ms per (s/bit).
        let pairs = [
            (0.0, 10.0, 3072_u64),
            (2.0, 9.0, 131_072),
            (9.0, 6.0, 32_768),
            (20.0, 2.0, 1024),
        ];
        let lines: Vec<(f64, f64)> = pairs
            .iter()
            .map(|&(d, e, bytes)| (d + e, bytes as f64 * 8000.0))
            .collect();
        let segments = lower_envelope(&lines);
        assert_well_formed(&lines, &segments);
        assert_eq!(segments[0], (0.0, 0));
        assert_eq!(segments.last().unwrap().1, 3);
        for bandwidth in [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9] {
            let x = 1.0 / bandwidth;
            assert_eq!(
                lookup(&segments, x),
                brute_force(&lines, x),
                "at {bandwidth} bit/s"
            );
        }
    }

    /// Small integer coefficients make ties (identical, parallel, concurrent lines) common.
    fn small_lines() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::vec((0_u32..8, 0_u32..8), 1..12).prop_map(|v| {
            v.into_iter()
                .map(|(a, b)| (f64::from(a), f64::from(b)))
                .collect()
        })
    }

    /// Plan-like magnitudes: tens of ms, slopes up to bytes·8000 for a few hundred KB.
    fn wide_lines() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::vec((0.0_f64..500.0, 0.0_f64..5e9), 1..25)
    }

    fn check_against_brute_force(lines: &[(f64, f64)], xs: &[f64]) -> Result<(), TestCaseError> {
        let segments = lower_envelope(lines);
        assert_well_formed(lines, &segments);
        for &x in xs {
            let got = value(lines, lookup(&segments, x), x);
            let want = value(lines, brute_force(lines, x), x);
            prop_assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "at x = {x}: envelope {got}, brute force {want}; {lines:?} -> {segments:?}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn small_integer_lines_match_brute_force(
            lines in small_lines(),
            xs in prop::collection::vec(0.0_f64..10.0, 16),
        ) {
            check_against_brute_force(&lines, &xs)?;
            // At x = 0 and at integer and half points, where ties are exact, the same
            // partition as the first minimum.
            let segments = lower_envelope(&lines);
            for x in (0..=20).map(|i| f64::from(i) / 2.0) {
                let want = brute_force(&lines, x);
                let got = lookup(&segments, x);
                if got != want {
                    // Only at a crossing point itself may the envelope take the new line.
                    prop_assert!(segments.iter().any(|&(from_x, p)| from_x == x && p == got));
                    prop_assert_eq!(value(&lines, got, x), value(&lines, want, x));
                }
            }
            prop_assert_eq!(lookup(&segments, 0.0), brute_force(&lines, 0.0));
        }

        #[test]
        fn plan_like_lines_match_brute_force(
            lines in wide_lines(),
            log_xs in prop::collection::vec(-10.0_f64..-2.0, 32),
        ) {
            let xs: Vec<f64> = log_xs.iter().map(|l| 10f64.powf(*l)).collect();
            check_against_brute_force(&lines, &xs)?;
        }
    }
}
