//! Flag values with units: bandwidths (`400kbit`, `1.5Mbit/s`, `2Mbps`, `50kB/s`) and
//! durations (`300ms`, `1s`, `250us`).
//!
//! Case matters in one place only: a lowercase `b` is a bit, an uppercase `B` a byte (as in
//! SI and IEC usage, and unlike `tc`, which reads `kbps` as kilobytes). Everything else —
//! decimal prefixes, the words `bit` and `byte`, duration units — is case-insensitive.

/// Longest duration a flag takes: 365 days (flags such as `--duration` or
/// `--connect-timeout`; nothing here waits longer).
pub const MAX_DURATION_MS: f64 = 365.0 * 24.0 * 3600.0 * 1e3;

/// Longest deadline: one hour. The protocol carries a request's deadline in microseconds as a
/// `u32` (at most 71.6 minutes), and no co-inference request waits that long.
pub const MAX_DEADLINE_MS: f64 = 3600.0 * 1e3;

/// Splits `400kbit` into the number `400` and the unit `kbit`.
fn split_number(text: &str) -> (&str, &str) {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(t.len());
    t.split_at(end)
}

/// Bits in one unit of a bandwidth unit without its rate suffix: `bit`, `b`, `kbit`, `Kb`,
/// `MB`, `Gbyte`… (`None` when it is not one).
fn bits_per_unit(unit: &str) -> Option<f64> {
    let (prefix, base) = match unit.chars().next() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G')) if unit.len() > 1 => {
            (Some(c), &unit[c.len_utf8()..])
        }
        _ => (None, unit),
    };
    let scale = match prefix.map(|c| c.to_ascii_lowercase()) {
        None => 1.0,
        Some('k') => 1e3,
        Some('m') => 1e6,
        _ => 1e9,
    };
    let bits = match base {
        "b" => 1.0,
        "B" => 8.0,
        word => match word.to_ascii_lowercase().as_str() {
            "bit" | "bits" => 1.0,
            "byte" | "bytes" => 8.0,
            _ => return None,
        },
    };
    Some(scale * bits)
}

/// Parses a bandwidth into bits per second. A unit is a decimal prefix (none, `k`, `M`, `G`;
/// any case), then bits (`bit`, `b`) or bytes (`byte`, `B`: ×8 bits), then optionally `/s`
/// or `ps`: `kbit`, `Mbit/s`, `kb/s`, `Mbps` are bits per second; `B`, `kB`, `KB/s`, `MBps`,
/// `GB` are bytes per second. Only the `b` says which: a lowercase `b` is bits, an
/// uppercase `B` bytes (so `mb` is megabits, `MB` megabytes); `bit` and `byte` are bits and
/// bytes in any case. A plain number is bits per second.
pub fn parse_bandwidth(text: &str) -> Result<f64, String> {
    let (number, unit) = split_number(text);
    let value: f64 = number.parse().map_err(|_| {
        format!("bandwidth `{text}` does not start with a number (e.g. 400kbit, 1.5Mbit)")
    })?;
    let unit = unit.trim();
    let per_unit = if unit.is_empty() {
        Some(1.0)
    } else {
        let base = unit
            .strip_suffix("/s")
            .or_else(|| unit.strip_suffix("ps"))
            .unwrap_or(unit);
        bits_per_unit(base)
    };
    let Some(per_unit) = per_unit else {
        return Err(format!(
            "unknown bandwidth unit `{unit}` in `{text}`: use bits per second (bit, kbit, Mbit, \
             Gbit; kb/s, Mbps) or bytes per second (B, kB, MB, GB; kB/s, MBps) — a lowercase b \
             is a bit, an uppercase B a byte; prefixes k, M, G in any case"
        ));
    };
    let bps = value * per_unit;
    if !(bps.is_finite() && bps > 0.0) {
        return Err(format!(
            "bandwidth `{text}` must be a positive, finite rate"
        ));
    }
    Ok(bps)
}

/// Parses a number with a duration unit into milliseconds, unchecked. Units, in any case:
/// `us` (or `µs`), `ms`, `s` (or `sec`); a plain number is milliseconds.
fn duration_value_ms(what: &str, text: &str) -> Result<f64, String> {
    let (number, unit) = split_number(text);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{what} `{text}` does not start with a number (e.g. 300ms, 1s)"))?;
    let scale = match unit.trim().to_lowercase().as_str() {
        "" | "ms" => 1.0,
        "s" | "sec" => 1e3,
        // The micro sign (U+00B5) and the Greek mu (U+03BC, also what a capital mu lowercases to).
        "us" | "µs" | "μs" => 1e-3,
        _ => {
            return Err(format!(
                "unknown duration unit `{}` in `{text}`: use us, ms or s (any case)",
                unit.trim()
            ));
        }
    };
    Ok(value * scale)
}

/// Parses a duration into milliseconds: a number with a unit `us` (or `µs`), `ms` or `s`, in
/// any case (`300ms`, `300MS`, `1s`, `250us`); a plain number is milliseconds. It must be
/// finite, from 0 up to [`MAX_DURATION_MS`] (365 days).
pub fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let ms = duration_value_ms("duration", text)?;
    if !(ms.is_finite() && (0.0..=MAX_DURATION_MS).contains(&ms)) {
        return Err(format!(
            "duration `{text}` must be a finite time from 0 up to 365 days"
        ));
    }
    Ok(ms)
}

/// Parses a deadline into milliseconds, with the units of [`parse_duration_ms`]. It must be
/// a finite positive time up to [`MAX_DEADLINE_MS`] (one hour).
pub fn parse_deadline_ms(text: &str) -> Result<f64, String> {
    let ms = duration_value_ms("deadline", text)?;
    if !(ms.is_finite() && ms > 0.0 && ms <= MAX_DEADLINE_MS) {
        return Err(format!(
            "deadline `{text}` must be a finite positive time up to 3600s (one hour)"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths() {
        assert_eq!(parse_bandwidth("400kbit").unwrap(), 4e5);
        assert_eq!(parse_bandwidth("1.5Mbit").unwrap(), 1.5e6);
        assert_eq!(parse_bandwidth("1.5mbit/s").unwrap(), 1.5e6);
        assert_eq!(parse_bandwidth("2Mbps").unwrap(), 2e6);
        assert_eq!(parse_bandwidth("50000").unwrap(), 5e4);
        for bad in ["", "fast", "10 parsecs", "0kbit", "-3Mbit", "kbit"] {
            assert!(parse_bandwidth(bad).is_err(), "{bad}");
        }
        assert!(
            parse_bandwidth("10furlongs")
                .unwrap_err()
                .contains("unknown bandwidth unit")
        );
    }

    #[test]
    fn per_second_units_with_a_slash_are_read() {
        for (text, bps) in [
            ("1kb/s", 1e3),
            ("1kbit/s", 1e3),
            ("2Mbit/s", 2e6),
            ("3Gb/s", 3e9),
            ("5bit/s", 5.0),
            ("5b/s", 5.0),
            ("1 kbit/s", 1e3),
        ] {
            assert_eq!(parse_bandwidth(text), Ok(bps), "{text}");
        }
    }

    #[test]
    fn an_uppercase_b_is_a_byte_and_prefixes_ignore_case() {
        for (text, bps) in [
            ("8MBps", 64e6),
            ("8MB/s", 64e6),
            ("8MB", 64e6),
            ("1B", 8.0),
            ("1Bps", 8.0),
            ("1B/s", 8.0),
            ("2kB", 16e3),
            ("2KB", 16e3),
            ("2kBps", 16e3),
            ("2KB/s", 16e3),
            ("1GB", 8e9),
            ("1GBps", 8e9),
            ("3byte/s", 24.0),
            ("3kBytes", 24e3),
        ] {
            assert_eq!(parse_bandwidth(text), Ok(bps), "{text}");
        }
        for (text, bps) in [
            ("1kbit", 1e3),
            ("1Kbit", 1e3),
            ("1mbit", 1e6),
            ("1Mbit", 1e6),
            ("1MBIT", 1e6),
            ("1mb", 1e6),
            ("1Mb", 1e6),
            ("1mbps", 1e6),
            ("1Kbps", 1e3),
            ("1gbit", 1e9),
        ] {
            assert_eq!(parse_bandwidth(text), Ok(bps), "{text}");
        }
        let err = parse_bandwidth("1Xb").unwrap_err();
        assert!(
            err.contains("a lowercase b is a bit, an uppercase B a byte"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("300ms").unwrap(), 300.0);
        assert_eq!(parse_duration_ms("1s").unwrap(), 1000.0);
        assert_eq!(parse_duration_ms("250us").unwrap(), 0.25);
        assert_eq!(parse_duration_ms("12").unwrap(), 12.0);
        assert_eq!(parse_duration_ms("0ms").unwrap(), 0.0);
        for bad in ["", "soon", "-1ms", "3h", "1e20s", "400days"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert!(
            parse_duration_ms("1e20s")
                .unwrap_err()
                .contains("from 0 up to 365 days")
        );
    }

    #[test]
    fn duration_units_ignore_case() {
        for (text, ms) in [
            ("300MS", 300.0),
            ("300Ms", 300.0),
            ("2S", 2000.0),
            ("2Sec", 2000.0),
            ("250US", 0.25),
            ("250µs", 0.25),
            ("250μs", 0.25),
            ("250ΜS", 0.25),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
            assert_eq!(parse_deadline_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn deadlines_are_finite_positive_and_at_most_an_hour() {
        assert_eq!(parse_deadline_ms("300ms"), Ok(300.0));
        assert_eq!(parse_deadline_ms("3600s"), Ok(3.6e6));
        for bad in [
            "1e20s", "1e400ms", "0ms", "-5ms", "3601s", "inf", "NaN", "nanms",
        ] {
            assert!(parse_deadline_ms(bad).is_err(), "{bad}");
        }
        let err = parse_deadline_ms("1e20s").unwrap_err();
        assert!(
            err.contains("deadline `1e20s` must be a finite positive time up to 3600s"),
            "{err}"
        );
        assert!(
            parse_deadline_ms("3h")
                .unwrap_err()
                .contains("unknown duration unit")
        );
    }
}
