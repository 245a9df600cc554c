//! Resource quantities (`500m`, `1Gi`, `2e3`) exact to the nano-unit,
//! compared, summed and printed as upstream's `resource.Quantity`.

/// How a quantity is written (upstream resource.Format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal SI suffixes: m, k, M, G...
    DecimalSI,
    /// Binary suffixes: Ki, Mi, Gi...
    BinarySI,
    /// Decimal exponents: 1e3.
    DecimalExponent,
}

/// A resource quantity, exact to the nano-unit (as upstream's int64
/// representation with scale down to nano).
#[derive(Clone, Copy, Debug)]
pub struct Qty {
    /// Value in units of 10^-9.
    pub nanos: i128,
    /// Format used when printing.
    pub format: Format,
}

impl PartialEq for Qty {
    fn eq(&self, o: &Self) -> bool {
        self.nanos == o.nanos
    }
}

const NANO: i128 = 1_000_000_000;

impl Qty {
    /// Zero (printed "0").
    pub const ZERO: Qty = Qty {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// An integer count.
    pub fn count(n: i64) -> Qty {
        Qty {
            nanos: i128::from(n) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Parses Kubernetes quantity syntax ("500m", "1Gi", "1.5", "2e3").
    /// Precision below a nano-unit rounds up, as upstream.
    pub fn parse(s: &str) -> Option<Qty> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (num, suffix) = body.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int}{frac}");
        let mantissa: i128 = digits.parse().ok()?;
        let frac_len = i32::try_from(frac.len()).ok()?;
        let (format, ten_exp, two_exp): (Format, i32, u32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 10),
            "Mi" => (Format::BinarySI, 0, 20),
            "Gi" => (Format::BinarySI, 0, 30),
            "Ti" => (Format::BinarySI, 0, 40),
            "Pi" => (Format::BinarySI, 0, 50),
            "Ei" => (Format::BinarySI, 0, 60),
            e if e.starts_with(['e', 'E']) => {
                (Format::DecimalExponent, e[1..].parse::<i32>().ok()?, 0)
            }
            _ => return None,
        };
        let mut v = mantissa.checked_mul(1i128.checked_shl(two_exp)?)?;
        // Scale to nano-units: value = v * 10^(ten_exp - frac_len).
        let exp = ten_exp - frac_len + 9;
        if exp >= 0 {
            v = v.checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?;
        } else {
            let d = 10i128
                .checked_pow(u32::try_from(-exp).ok()?)
                .unwrap_or(i128::MAX);
            v = v / d + i128::from(v % d != 0);
        }
        Some(Qty {
            nanos: if neg { -v } else { v },
            format,
        })
    }

    /// Adds `o`; a zero takes the other's format, as upstream's Add.
    pub fn add(&mut self, o: Qty) {
        if self.nanos == 0 {
            self.format = o.format;
        }
        self.nanos = self.nanos.saturating_add(o.nanos);
    }

    /// The canonical text, as upstream's Quantity.String(): the largest
    /// suffix that keeps the number whole ("1500m", "2k", "1Gi", "1536Mi").
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let mut format = self.format;
        let whole = self.nanos % NANO == 0;
        if format == Format::BinarySI && (!whole || (self.nanos / NANO).abs() < 1024) {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let units = self.nanos / NANO;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut k = 0;
            while k < 6 && units % (1i128 << (10 * (k + 1))) == 0 {
                k += 1;
            }
            return format!("{}{}", units >> (10 * k), suffixes[k]);
        }
        // Decimal: exponent -9..=18 in steps of 3, the largest that divides.
        let mut exp: i32 = -9;
        let mut mant = self.nanos;
        while exp < 18 && mant % 1000 == 0 {
            mant /= 1000;
            exp += 3;
        }
        let suffix = match format {
            Format::DecimalExponent if exp == 0 => String::new(),
            Format::DecimalExponent => format!("e{exp}"),
            _ => match exp {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            }
            .to_string(),
        };
        format!("{mant}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Qty::parse(s).unwrap().canonical()
    }

    #[test]
    fn quantities_print_canonically() {
        assert_eq!(canon("500m"), "500m");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("2000"), "2k");
        assert_eq!(canon("1500"), "1500");
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("512"), "512");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("128974848"), "128974848");
        assert_eq!(canon("129e6"), "129e6");
        assert!(Qty::parse("1Xi").is_none());
        assert!(Qty::parse("").is_none());
    }

    #[test]
    fn sums_keep_the_first_nonzero_format() {
        let mut q = Qty::ZERO;
        q.add(Qty::parse("64Mi").unwrap());
        q.add(Qty::parse("64Mi").unwrap());
        assert_eq!(q.canonical(), "128Mi");
        let mut c = Qty::ZERO;
        c.add(Qty::parse("250m").unwrap());
        c.add(Qty::parse("750m").unwrap());
        assert_eq!(c.canonical(), "1");
    }
}
