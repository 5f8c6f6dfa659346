//! Sizes as qemu-img writes them: `10G`, `512M`, `1.5T`, `4096`.

use crate::error::{invalid, Result};

/// Parses a size with an optional binary suffix (B, K, M, G, T, P, E; case
/// insensitive; `k`/`KiB` style accepted). Fractions are allowed with a suffix.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let err = || {
        invalid(format!(
            "size {s:?} is not a number with an optional suffix such as 512, 64M, 10G or 1T"
        ))
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suf) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let suf = suf.trim();
    let suf = suf
        .strip_suffix("iB")
        .or_else(|| suf.strip_suffix("ib"))
        .unwrap_or(suf);
    let mult: u64 = match suf.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        "e" => 1 << 60,
        _ => return Err(err()),
    };
    if num.contains('.') {
        if mult == 1 {
            return Err(err());
        }
        let f: f64 = num.parse().map_err(|_| err())?;
        let v = f * mult as f64;
        if !v.is_finite() || v >= u64::MAX as f64 {
            return Err(invalid(format!("size {s:?} is too large")));
        }
        return Ok(v as u64);
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(mult)
        .ok_or_else(|| invalid(format!("size {s:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn qemu_img_suffixes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert!(parse_size("").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999E").is_err());
    }
}
