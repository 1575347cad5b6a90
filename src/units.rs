//! Quantities written as text with their unit (`300GB/s`, `80GiB`, `1.5ms`, `19.5TFLOP/s`).
//!
//! Scenario files write every physical quantity with its unit so that a reader never has to guess
//! whether `300` means bytes or gigabytes. These parsers turn the text into integer nanoseconds,
//! integer bytes or floating-point rates, and reject anything ambiguous with a message that says
//! what was expected.

use thiserror::Error;

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    /// The text has no number in front of the unit.
    #[error("`{text}` is not a number followed by a unit (expected e.g. {example})")]
    NotANumber {
        /// The text as written.
        text: String,
        /// An example of a valid quantity of this kind.
        example: &'static str,
    },
    /// The number is written without a unit.
    #[error("`{text}` has no unit (expected e.g. {example})")]
    MissingUnit {
        /// The text as written.
        text: String,
        /// An example of a valid quantity of this kind.
        example: &'static str,
    },
    /// The unit is not one this kind of quantity accepts.
    #[error("unknown unit `{unit}` in `{text}` (expected one of {expected})")]
    UnknownUnit {
        /// The text as written.
        text: String,
        /// The unit part of the text.
        unit: String,
        /// The accepted units, comma separated.
        expected: &'static str,
    },
    /// The value is negative, zero where it must be positive, or not finite.
    #[error("`{text}` must be {requirement}")]
    OutOfRange {
        /// The text as written.
        text: String,
        /// What the value must be.
        requirement: &'static str,
    },
}

/// Splits `"1.5ms"` into `(1.5, "ms")`, tolerating spaces between number and unit.
fn split_number(text: &str, example: &'static str) -> Result<(f64, String), UnitError> {
    let trimmed = text.trim();
    let bytes = trimmed.as_bytes();
    let end = trimmed
        .char_indices()
        .find(|&(i, ch)| {
            // A sign may lead the number or follow its exponent marker (`1e-3GB/s`).
            let signs_here = i == 0 || (matches!(bytes[i - 1], b'e' | b'E') && i > 1);
            !(ch.is_ascii_digit()
                || ch == '.'
                || ch == '_'
                || ((ch == '-' || ch == '+') && signs_here)
                || ((ch == 'e' || ch == 'E') && looks_like_exponent(trimmed, i)))
        })
        .map_or(trimmed.len(), |(i, _)| i);
    let number: String = trimmed[..end].chars().filter(|&ch| ch != '_').collect();
    let value: f64 = number.parse().map_err(|_| UnitError::NotANumber {
        text: text.to_string(),
        example,
    })?;
    if !value.is_finite() {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement: "a finite number",
        });
    }
    Ok((value, trimmed[end..].trim().to_string()))
}

/// An `e` is an exponent marker only when a digit (optionally signed) follows it, so that units
/// such as `EB` are not mistaken for exponents.
fn looks_like_exponent(text: &str, i: usize) -> bool {
    let rest = &text.as_bytes()[i + 1..];
    match rest {
        [b'+' | b'-', d, ..] | [d, ..] => d.is_ascii_digit() && i > 0,
        [] => false,
    }
}

fn non_negative(text: &str, value: f64) -> Result<f64, UnitError> {
    if value < 0.0 {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement: "zero or positive",
        });
    }
    Ok(value)
}

fn positive(text: &str, value: f64) -> Result<f64, UnitError> {
    if value <= 0.0 {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement: "positive",
        });
    }
    Ok(value)
}

/// A rate below one per second is refused: the slowest any device or link can be modelled.
fn at_least_one(text: &str, value: f64, requirement: &'static str) -> Result<f64, UnitError> {
    if value < 1.0 {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement,
        });
    }
    Ok(value)
}

const TIME_UNITS: &str = "ns, us, ms, s";

/// Parses a duration (`2us`, `1.5ms`, `0s`) into integer nanoseconds, rounding to the nearest.
pub fn parse_duration_ns(text: &str) -> Result<u64, UnitError> {
    let example = "1.5ms";
    let (value, unit) = split_number(text, example)?;
    let scale = match unit.as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "" if value == 0.0 => 1.0,
        "" => {
            return Err(UnitError::MissingUnit {
                text: text.to_string(),
                example,
            })
        }
        _ => {
            return Err(UnitError::UnknownUnit {
                text: text.to_string(),
                unit,
                expected: TIME_UNITS,
            })
        }
    };
    let ns = non_negative(text, value)? * scale;
    if ns > u64::MAX as f64 / 2.0 {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement: "shorter than 290 years",
        });
    }
    Ok(ns.round() as u64)
}

const BYTE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";

fn byte_scale(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// Parses a size (`80GiB`, `512MB`, `0B`) into integer bytes, rounding to the nearest.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let example = "80GiB";
    let (value, unit) = split_number(text, example)?;
    let scale = match (unit.as_str(), byte_scale(&unit)) {
        (_, Some(scale)) => scale,
        ("", None) if value == 0.0 => 1.0,
        ("", None) => {
            return Err(UnitError::MissingUnit {
                text: text.to_string(),
                example,
            })
        }
        (_, None) => {
            return Err(UnitError::UnknownUnit {
                text: text.to_string(),
                unit,
                expected: BYTE_UNITS,
            })
        }
    };
    let bytes = non_negative(text, value)? * scale;
    if bytes > 1e18 {
        return Err(UnitError::OutOfRange {
            text: text.to_string(),
            requirement: "at most 1 EB",
        });
    }
    Ok(bytes.round() as u64)
}

const BANDWIDTH_UNITS: &str =
    "B/s, KB/s, MB/s, GB/s, TB/s, KiB/s, MiB/s, GiB/s, bit/s, Kbit/s, Mbit/s, Gbit/s, Tbit/s";

/// Parses a bandwidth (`300GB/s`, `25Gbit/s`) into bytes per second; it must be at least
/// 1B/s, so that a transfer's time stays within what nanoseconds in a `u64` count.
pub fn parse_bandwidth(text: &str) -> Result<f64, UnitError> {
    let example = "300GB/s or 25Gbit/s";
    let (value, unit) = split_number(text, example)?;
    if unit.is_empty() {
        return Err(UnitError::MissingUnit {
            text: text.to_string(),
            example,
        });
    }
    let unknown = || UnitError::UnknownUnit {
        text: text.to_string(),
        unit: unit.clone(),
        expected: BANDWIDTH_UNITS,
    };
    let per_second = unit.strip_suffix("/s").ok_or_else(unknown)?;
    let scale = if let Some(prefix) = per_second.strip_suffix("bit") {
        let prefix_scale = match prefix {
            "" => 1.0,
            "K" | "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            _ => return Err(unknown()),
        };
        prefix_scale / 8.0
    } else {
        byte_scale(per_second).ok_or_else(unknown)?
    };
    at_least_one(text, positive(text, value * scale)?, "at least 1B/s")
}

const FLOP_UNITS: &str = "FLOP/s, GFLOP/s, TFLOP/s, PFLOP/s";

/// Parses a compute rate (`19.5TFLOP/s`) into floating-point operations per second; at least
/// 1FLOP/s, so that an op's time stays within what nanoseconds in a `u64` count.
pub fn parse_flops(text: &str) -> Result<f64, UnitError> {
    let example = "19.5TFLOP/s";
    let (value, unit) = split_number(text, example)?;
    let scale = match unit.as_str() {
        "FLOP/s" => 1.0,
        "KFLOP/s" => 1e3,
        "MFLOP/s" => 1e6,
        "GFLOP/s" => 1e9,
        "TFLOP/s" => 1e12,
        "PFLOP/s" => 1e15,
        "" => {
            return Err(UnitError::MissingUnit {
                text: text.to_string(),
                example,
            })
        }
        _ => {
            return Err(UnitError::UnknownUnit {
                text: text.to_string(),
                unit,
                expected: FLOP_UNITS,
            })
        }
    };
    at_least_one(text, positive(text, value * scale)?, "at least 1FLOP/s")
}

/// Formats nanoseconds with a unit a person reads at a glance (`1.50ms`, `250ns`).
pub fn format_duration_ns(ns: u64) -> String {
    let value = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.2}us", value / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", value / 1e6)
    } else {
        format!("{:.3}s", value / 1e9)
    }
}

/// Formats a byte count with a binary unit (`1.00GiB`, `512B`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("2us"), Ok(2_000));
        assert_eq!(parse_duration_ns("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration_ns("3s"), Ok(3_000_000_000));
        assert_eq!(parse_duration_ns("0"), Ok(0));
        assert_eq!(parse_duration_ns("7 ns"), Ok(7));
        assert!(matches!(
            parse_duration_ns("5"),
            Err(UnitError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration_ns("5h"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration_ns("-1ms"),
            Err(UnitError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration_ns("ms"),
            Err(UnitError::NotANumber { .. })
        ));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("80GiB"), Ok(80 * (1 << 30)));
        assert_eq!(parse_bytes("512MB"), Ok(512_000_000));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(matches!(
            parse_bytes("3 parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn bandwidths() {
        assert_eq!(parse_bandwidth("300GB/s"), Ok(300e9));
        assert_eq!(parse_bandwidth("25Gbit/s"), Ok(25e9 / 8.0));
        assert_eq!(parse_bandwidth("1GiB/s"), Ok(1073741824.0));
        assert!(matches!(
            parse_bandwidth("0GB/s"),
            Err(UnitError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_bandwidth("-3GB/s"),
            Err(UnitError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_bandwidth("3GB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        // Issue 12: a bandwidth too slow for the nanosecond clock made epochs wrap.
        assert_eq!(
            parse_bandwidth("0.000001B/s").unwrap_err().to_string(),
            "`0.000001B/s` must be at least 1B/s"
        );
        assert_eq!(parse_bandwidth("8bit/s"), Ok(1.0));
    }

    #[test]
    fn flop_rates() {
        assert_eq!(parse_flops("19.5TFLOP/s"), Ok(19.5e12));
        assert_eq!(parse_flops("1e3GFLOP/s"), Ok(1e12));
        assert_eq!(parse_flops("1e+3GFLOP/s"), Ok(1e12));
        assert!(matches!(
            parse_flops("19.5"),
            Err(UnitError::MissingUnit { .. })
        ));
        assert_eq!(
            parse_flops("1e-30GFLOP/s").unwrap_err().to_string(),
            "`1e-30GFLOP/s` must be at least 1FLOP/s"
        );
    }

    /// Issue 12: signed exponents parse, and a unit starting with `E` is still a unit.
    #[test]
    fn signed_exponents() {
        assert_eq!(parse_bandwidth("1e-3GB/s"), Ok(1e6));
        assert_eq!(parse_duration_ns("1e-6s"), Ok(1_000));
        assert_eq!(parse_duration_ns("2.5E+3ns"), Ok(2_500));
        assert_eq!(parse_bytes("1e+3B"), Ok(1_000));
        assert!(parse_duration_ns("1e-s").is_err());
        assert!(matches!(
            parse_duration_ns("e-6s"),
            Err(UnitError::NotANumber { .. })
        ));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration_ns(250), "250ns");
        assert_eq!(format_duration_ns(1_500_000), "1.50ms");
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1 << 30), "1.00GiB");
    }
}
