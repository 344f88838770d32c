//! Sizes on the command line: `4096`, `64K`, `512M`, `1G`, `1.5G`, `2TiB`.
//!
//! Suffixes are binary (K = 1024) and case-insensitive; `B`, `iB` after the letter are
//! accepted. A fraction is allowed when it comes to a whole number of bytes.

/// Parses a size in bytes. The error says what is wrong and what is accepted.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad =
        |why: &str| format!("invalid size {text:?}: {why} (examples: 4096, 64K, 512M, 1G, 1.5G)");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(bad(&format!("unknown unit {suffix:?}"))),
    };
    let unit = 1u128 << shift;
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("no number"));
    }
    if !whole.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad("not a number"));
    }
    if whole.len() > 20 || frac.len() > 18 {
        return Err(bad("too many digits"));
    }
    let whole_v: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("not a number"))?
    };
    let mut bytes = whole_v * unit;
    if !frac.is_empty() {
        let frac_v: u128 = frac.parse().map_err(|_| bad("not a number"))?;
        let denom = 10u128.pow(frac.len() as u32);
        let scaled = frac_v * unit;
        if !scaled.is_multiple_of(denom) {
            return Err(bad("not a whole number of bytes"));
        }
        bytes += scaled / denom;
    }
    u64::try_from(bytes).map_err(|_| bad("too large"))
}

/// A size for people: `256.00 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_suffixed_sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size(" 7b "), Ok(7));
    }

    #[test]
    fn fractions_that_make_whole_bytes_parse() {
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size(".25M"), Ok(256 << 10));
        assert!(parse_size("1.1").unwrap_err().contains("whole number"));
        assert!(parse_size("0.3K").unwrap_err().contains("whole number"));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for bad in [
            "",
            "G",
            "1X",
            "1.2.3G",
            "-1",
            "1 G B",
            "abc",
            "99999999999999999999P",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
        assert!(parse_size("16E").unwrap_err().contains("unknown unit"));
        assert!(parse_size("20000P").unwrap_err().contains("too large"));
    }

    #[test]
    fn human_sizes_read_well() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(256 << 20), "256.00 MiB");
        assert_eq!(human(3 << 29), "1.50 GiB");
    }
}
