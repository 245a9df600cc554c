//! Resource quantities (`100m`, `1.5Gi`, `2e3`) as integers, exactly as
//! upstream's `resource.Quantity` scales them: decimal and binary SI
//! suffixes and exponents, rounding up.

/// Parses a quantity, scaled by `scale` (1000 for milli-units), rounding up.
/// Returns None for malformed text.
pub fn parse_scaled(q: &str, scale: i128) -> Option<i64> {
    let s = q.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." {
        return None;
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let mut mantissa: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(c.to_digit(10)? as i128)?;
    }
    let mut exp10: i32 = -(frac.len() as i32);
    let mut mult: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => mult = 1 << 10,
        "Mi" => mult = 1 << 20,
        "Gi" => mult = 1 << 30,
        "Ti" => mult = 1 << 40,
        "Pi" => mult = 1 << 50,
        "Ei" => mult = 1 << 60,
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(mult)?.checked_mul(scale)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.checked_mul(10)?;
        }
    } else {
        let d = 10i128.checked_pow((-exp10) as u32)?;
        v = (v + d - 1) / d;
    }
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_scaled("100m", 1000), Some(100));
        assert_eq!(parse_scaled("1.5", 1000), Some(1500));
        assert_eq!(parse_scaled("2", 1000), Some(2000));
        assert_eq!(parse_scaled("1Gi", 1), Some(1 << 30));
        assert_eq!(parse_scaled("500M", 1), Some(500_000_000));
        assert_eq!(parse_scaled("1e3", 1), Some(1000));
        assert_eq!(parse_scaled("1.5Ki", 1), Some(1536));
        assert_eq!(parse_scaled("0.1m", 1000), Some(1));
        assert_eq!(parse_scaled("abc", 1), None);
        assert_eq!(parse_scaled("1Q", 1), None);
    }
}
