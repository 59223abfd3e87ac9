//! Sizes on the command line and in labels: bytes (or element counts) with
//! binary suffixes, `4K` = 4096, `16M` = 16 MiB, `1G` = 1 GiB.

/// Parses `4096`, `4K`, `4KiB`, `16M`, `16MB`, `1G`, `1GiB` (binary
/// multiples, case-insensitive) into a number of units.
pub fn parse(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let lower = s.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "{text:?} is not a size (expected e.g. 4096, 64K, 16M, 1G)"
        ));
    }
    let shift = match suffix.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown suffix {other:?} (expected K, M or G)"
            ));
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a comma-separated list of sizes.
pub fn parse_list(text: &str) -> Result<Vec<u64>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse)
        .collect()
}

/// The shortest exact label: `4K`, `16M`, `1G`, or the plain number.
pub fn label(n: u64) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// Sizes from `min` to `max` (bytes), multiplying by `step` each time;
/// `max` itself is always included.
pub fn ladder(min: u64, max: u64, step: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut s = min.max(4);
    while s < max {
        out.push(s);
        s = s.saturating_mul(step.max(2));
    }
    out.push(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_labels() {
        assert_eq!(parse("4096").unwrap(), 4096);
        assert_eq!(parse("4K").unwrap(), 4096);
        assert_eq!(parse("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse("1g").unwrap(), 1 << 30);
        assert!(parse("x").is_err());
        assert!(parse("4T").is_err());
        assert_eq!(
            parse_list("4K, 64K,1M").unwrap(),
            vec![4096, 65536, 1 << 20]
        );
        assert_eq!(label(4096), "4K");
        assert_eq!(label(16 << 20), "16M");
        assert_eq!(label(1 << 30), "1G");
        assert_eq!(label(1536), "1536");
        assert_eq!(label(64), "64");
        assert_eq!(ladder(4096, 1 << 20, 16), vec![4096, 65536, 1 << 20]);
        assert_eq!(ladder(4096, 100_000, 16), vec![4096, 65536, 100_000]);
    }
}
