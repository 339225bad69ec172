//! Parsers of durations and sizes as written in flags and the environment.

use std::time::Duration;

/// Parses a size: `512`, `64KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB`, as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512, 64KiB or 10MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `500ms`, `30s`, `10m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 10m, 12h or 7d"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// Writes a duration as [`parse_duration`] reads it, in its largest exact unit (`300s` is
/// `5m`): how a default taken from a crate shows in `--help`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ]
    .into_iter()
    .find(|(_, per)| ms != 0 && ms.is_multiple_of(*per))
    .map_or_else(
        || format!("{ms}ms"),
        |(unit, per)| format!("{}{unit}", ms / per),
    )
}

/// Writes a size as [`parse_size`] reads it, in its largest exact unit (`65536` is `64KiB`).
pub fn format_size(bytes: u64) -> String {
    [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .into_iter()
        .find(|(_, per)| bytes != 0 && bytes.is_multiple_of(*per))
        .map_or_else(
            || bytes.to_string(),
            |(unit, per)| format!("{}{unit}", bytes / per),
        )
}
