//! Durations (`"250ms"`, `"25s"`, `"2m"`, `"1h"`, `"1m30s"`) and sizes (`65536`, `"64KiB"`,
//! `"4MiB"`, `"1MB"`): parsing for the config file and formatting for `herald config show`.
//!
//! Both parsers are strict on purpose: a bare number is not a duration (is `25` seconds or
//! milliseconds?), and a fraction is not a size. The error strings are fragments that the schema
//! reader wraps with the key and the line.

use std::time::Duration;

/// The longest duration accepted anywhere (100 years). Bounding it keeps `Instant + d`, which
/// panics on overflow, safe in every timer built from the configuration.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses `"250ms"`, `"25s"`, `"2m"`, `"1h"`, `"1d"` and sums of them (`"1m30s"`, `"1h 30m"`).
/// Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`. Every number needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    if s.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err("expected a number followed by a unit".into());
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| "the number is too large".to_string())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len() - rest.trim_start_matches(|c: char| c.is_alphabetic()).len();
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(if rest.starts_with('.') {
                "fractions are not supported: use a smaller unit".into()
            } else {
                "a number without a unit is not a duration".into()
            });
        }
        let Some(&(_, nanos)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit `{unit}`"));
        };
        total = number
            .checked_mul(nanos)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| "the duration is too large".to_string())?;
        rest = rest[unit_len..].trim_start();
    }
    if total > MAX_DURATION.as_nanos() {
        return Err("the duration is too large (at most 100 years)".into());
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "the duration is too large")?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| "the duration is too large")?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration in the largest unit that represents it exactly: `"25s"`, `"2m"`,
/// `"250ms"`, `"90s"`. [`parse_duration`] reads the result back to the same value.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let (unit, size) = DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, size)| nanos.is_multiple_of(*size))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / size)
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

/// Parses a size string: `"65536"`, `"512B"`, `"64KiB"`, `"4MiB"`, `"1GiB"` (powers of 1024) or
/// `"1KB"`, `"4MB"`, `"1GB"` (powers of 1000). Units ignore case; a space before the unit is fine.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("a size cannot be empty".into());
    }
    if s.starts_with('-') {
        return Err("a size cannot be negative".into());
    }
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err("expected a number of bytes, optionally followed by a unit".into());
    }
    let number: u64 = s[..digits]
        .parse()
        .map_err(|_| "the number is too large".to_string())?;
    let unit = s[digits..].trim_start();
    if unit.starts_with('.') {
        return Err("fractions are not supported: use a smaller unit".into());
    }
    if unit.is_empty() {
        return Ok(number);
    }
    let lower = unit.to_ascii_lowercase();
    let Some(&(_, factor)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
        return Err(format!("unknown unit `{unit}`"));
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "the size is too large".to_string())
}

/// Formats a size with the largest binary unit that divides it (`"4MiB"`, `"64KiB"`), else as a
/// plain integer of bytes.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("25s"), Duration::from_secs(25));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1d"), Duration::from_secs(86400));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok(" 0s "), Duration::ZERO);
        assert_eq!(ok("1s500ms"), Duration::from_millis(1500));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        for bad in [
            "",
            "25",
            "-5s",
            "25 parsecs",
            "1.5s",
            "s",
            "5S",
            "1m30",
            "99999999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("36501d").is_err());
        assert!(parse_duration("36500d").is_ok());
    }

    #[test]
    fn duration_format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_millis(1500),
            Duration::from_secs(25),
            Duration::from_secs(90),
            Duration::from_secs(120),
            Duration::from_secs(7200),
            Duration::from_secs(86400 * 3),
            Duration::from_nanos(1_234_567),
            Duration::from_micros(10),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(25)), "25s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn sizes() {
        let ok = |s: &str| parse_size(s).unwrap();
        assert_eq!(ok("65536"), 65536);
        assert_eq!(ok("512B"), 512);
        assert_eq!(ok("64KiB"), 65536);
        assert_eq!(ok("4MiB"), 4 << 20);
        assert_eq!(ok("4 MiB"), 4 << 20);
        assert_eq!(ok("1GiB"), 1 << 30);
        assert_eq!(ok("1KB"), 1000);
        assert_eq!(ok("1kb"), 1000);
        assert_eq!(ok("4MB"), 4_000_000);
        for bad in [
            "",
            "-1",
            "1.5MiB",
            "4 parsecs",
            "MiB",
            "99999999999GiB",
            "4MiBs",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn size_format_round_trips() {
        for n in [
            0,
            1,
            1000,
            1024,
            65536,
            4 << 20,
            1 << 30,
            3 << 30,
            1_000_000,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(1000), "1000");
    }
}
