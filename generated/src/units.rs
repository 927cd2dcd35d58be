//! Flag values with units: bandwidths (`400kbit`, `1.5Mbit/s`, `2mbps`) and durations
//! (`300ms`, `1s`, `250us`).

/// Splits `400kbit` into the number `400` and the unit `kbit`.
fn split_number(text: &str) -> (&str, &str) {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(t.len());
    t.split_at(end)
}

/// Parses a bandwidth into bits per second. Units: `bit`, `kbit`, `Mbit`, `Gbit` (optionally
/// `/s`), `bps`, `kbps`, `Mbps`, `Gbps` (case-insensitive, decimal prefixes); a plain number
/// is bits per second.
pub fn parse_bandwidth(text: &str) -> Result<f64, String> {
    let (number, unit) = split_number(text);
    let value: f64 = number.parse().map_err(|_| {
        format!("bandwidth `{text}` does not start with a number (e.g. 400kbit, 1.5Mbit)")
    })?;
    let unit = unit.trim().trim_end_matches("/s").to_ascii_lowercase();
    let scale = match unit.as_str() {
        "" | "bit" | "bps" | "b/s" => 1.0,
        "kbit" | "kbps" | "kb/s" => 1e3,
        "mbit" | "mbps" | "mb/s" => 1e6,
        "gbit" | "gbps" | "gb/s" => 1e9,
        other => {
            return Err(format!(
                "unknown bandwidth unit `{other}` in `{text}`: use bit, kbit, Mbit or Gbit (per second)"
            ));
        }
    };
    let bps = value * scale;
    if !(bps.is_finite() && bps > 0.0) {
        return Err(format!(
            "bandwidth `{text}` must be a positive, finite rate"
        ));
    }
    Ok(bps)
}

/// Parses a duration into milliseconds. Units: `us`, `ms`, `s`; a plain number is ms.
pub fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let (number, unit) = split_number(text);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}` does not start with a number (e.g. 300ms, 1s)"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" | "sec" => 1e3,
        "us" | "µs" => 1e-3,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}`: use us, ms or s"
            ));
        }
    };
    let ms = value * scale;
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(format!(
            "duration `{text}` must be a non-negative, finite time"
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
    fn durations() {
        assert_eq!(parse_duration_ms("300ms").unwrap(), 300.0);
        assert_eq!(parse_duration_ms("1s").unwrap(), 1000.0);
        assert_eq!(parse_duration_ms("250us").unwrap(), 0.25);
        assert_eq!(parse_duration_ms("12").unwrap(), 12.0);
        for bad in ["", "soon", "-1ms", "3h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
