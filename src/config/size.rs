//! Sizes as people write them: `"2GiB"`, `"500 MB"`, `"1.5G"`, `"4096"`.
//!
//! A number (whole or with a decimal point), optional spaces, then a unit:
//!
//! | unit | means |
//! |---|---|
//! | none, `B` | bytes |
//! | `KiB`, `MiB`, `GiB`, `TiB` | powers of 1024 |
//! | `kB`, `MB`, `GB`, `TB` | powers of 1000 |
//! | `K`, `M`, `G`, `T` | powers of 1024 (as `du`, rsync and systemd read them) |
//!
//! Units are read without regard to case. A fraction of a byte is dropped.

/// What a size error says is expected.
pub(crate) const EXPECTED: &str = r#"a size like "500MB", "2GiB" or "1.5G" (K, M, G, T are powers of 1024; kB, MB, GB, TB of 1000)"#;

/// Parse a size; the reason, when the text is not one.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start());
    if number.is_empty() {
        return Err(format!("cannot read \"{t}\" as a size"));
    }
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown unit {unit:?} in the size \"{t}\"")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if number == "." || !digits(whole) || !digits(fraction) {
        return Err(format!("cannot read \"{t}\" as a size"));
    }
    // Exact: at most 19 digits on either side keeps everything in a u128.
    if whole.len() > 19 || fraction.len() > 19 {
        return Err(format!("the size \"{t}\" is too large"));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("cannot read \"{t}\""))?
    };
    let frac_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction
            .parse()
            .map_err(|_| format!("cannot read \"{t}\""))?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let bytes = whole * multiplier + frac_value * multiplier / scale;
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| format!("the size \"{t}\" is too large"))
}

/// A size for people: `"3.2 GiB"`, `"512 bytes"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written() {
        for (text, bytes) in [
            ("4096", 4096),
            ("10B", 10),
            ("2GiB", 2 << 30),
            ("2 GiB", 2 << 30),
            ("2gib", 2 << 30),
            ("500 MB", 500_000_000),
            ("500MiB", 500 << 20),
            ("1.5G", 3 << 29),
            ("1.5 kB", 1500),
            ("64K", 65536),
            ("1T", 1 << 40),
            ("1TB", 1_000_000_000_000),
            (".5M", 1 << 19),
            (" 7 M ", 7 << 20),
            ("0", 0),
            ("0.1B", 0),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for (text, why) in [
            ("", "cannot read"),
            ("GiB", "cannot read"),
            ("2 GB GB", "unknown unit"),
            ("2 PiB", "unknown unit"),
            ("1.2.3M", "cannot read"),
            ("-1M", "cannot read"),
            ("2 gigs", "unknown unit"),
            ("99999999999999999999", "too large"),
            ("9000000T", "too large"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(format_size(512), "512 bytes");
        assert_eq!(format_size(2048), "2.0 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(u64::MAX), "16777216.0 TiB");
    }
}
