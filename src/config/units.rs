//! Textual units of the config file: durations, sizes and status ranges.
//!
//! Each parser returns a short reason on failure; the caller attaches the
//! location and key.

use std::time::Duration;

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"1.5s"`, `"500us"`.
///
/// A bare number is refused: a duration without its unit is ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. \"250ms\", \"2s\" or \"1m\""))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration; write e.g. \"250ms\", \"2s\" or \"1m\""
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; use us, ms, s, m, h or d"
            ));
        }
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > 365.0 * 86400.0 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a size: a string with a unit (`"512KiB"`, `"10MiB"`, `"1GB"`, `"100B"`).
/// Integers are handled by the caller (they are bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a size; write bytes or e.g. \"512KiB\", \"10MiB\", \"1GB\""
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{number}` is too large"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A set of HTTP status codes such as `"200-399"`, `"200"` or `"200,204,300-399"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    /// Parses a comma-separated list of codes and inclusive ranges within 100-599.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (parse_status(low)?, parse_status(high)?),
                None => {
                    let code = parse_status(part)?;
                    (code, code)
                }
            };
            if low > high {
                return Err(format!("range `{part}` is empty"));
            }
            ranges.push((low, high));
        }
        Ok(Self(ranges))
    }

    /// Whether `code` is in one of the ranges.
    pub fn contains(&self, code: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }
}

fn parse_status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "`{}` is not an HTTP status code (100-599)",
            text.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1PB").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn status_ranges() {
        let r = StatusRanges::parse("200-399").unwrap();
        assert!(r.contains(200) && r.contains(399) && !r.contains(404));
        let r = StatusRanges::parse("204, 300-301").unwrap();
        assert!(r.contains(204) && r.contains(301) && !r.contains(200));
        assert!(StatusRanges::parse("399-200").is_err());
        assert!(StatusRanges::parse("99").is_err());
        assert!(StatusRanges::parse("abc").is_err());
    }
}
