//! YAML 1.2 core-schema resolution of plain scalars, and the YAML 1.1 reading Helm applies.
//!
//! mesh.yaml is read as YAML 1.2 (`yes` is a string, `010` is ten). Helm reads values with a
//! YAML 1.1 parser (`yes` is true, `010` is eight). Where the two disagree, cmesh reports the
//! scalar instead of guessing what the user meant.

/// The type a plain scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// `~`, `null`, empty.
    Null,
    /// `true` / `false` in their three spellings.
    Bool(bool),
    /// Decimal, `0o` octal or `0x` hexadecimal integer.
    Int(i128),
    /// Any other number, including `.inf` and `.nan`.
    Float(f64),
    /// Everything else.
    Str,
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
pub fn resolve_plain(text: &str) -> Resolved {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty()
            && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && let Ok(v) = i128::from_str_radix(oct, 8)
        {
            return Resolved::Int(v);
        }
        return Resolved::Str;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(v) = i128::from_str_radix(hex, 16)
        {
            return Resolved::Int(v);
        }
        return Resolved::Str;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i128>() {
            Ok(v) => Resolved::Int(v),
            // Beyond i128: still a number in YAML's eyes.
            Err(_) => text
                .parse::<f64>()
                .map(Resolved::Float)
                .unwrap_or(Resolved::Str),
        };
    }
    if is_core_float(text)
        && let Ok(v) = text.parse::<f64>()
    {
        return Resolved::Float(v);
    }
    Resolved::Str
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let b = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// If a YAML 1.1 reader (Helm, Go's yaml.v2) would read this plain scalar differently from
/// YAML 1.2, describes the 1.1 reading; otherwise `None`.
pub fn yaml11_reading(text: &str) -> Option<String> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Some("the boolean true".into());
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Some("the boolean false".into());
        }
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(if digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let v = i128::from_str_radix(digits, 8).unwrap_or_default();
            format!("the octal number {v}")
        } else {
            "something other than a decimal number".to_string()
        });
    }
    if text.starts_with("0o") && matches!(resolve_plain(text), Resolved::Int(_)) {
        return Some("a string (YAML 1.1 has no 0o octal)".into());
    }
    if text.contains('_')
        && text
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_')
        && text.bytes().any(|b| b.is_ascii_digit())
    {
        return Some("a number with the underscores removed".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema() {
        assert_eq!(resolve_plain("01"), Resolved::Int(1));
        assert_eq!(resolve_plain("-12"), Resolved::Int(-12));
        assert_eq!(resolve_plain("0x1F"), Resolved::Int(31));
        assert_eq!(resolve_plain("0o17"), Resolved::Int(15));
        assert_eq!(resolve_plain("1.14"), Resolved::Float(1.14));
        assert_eq!(resolve_plain("1.14.2"), Resolved::Str);
        assert_eq!(resolve_plain("12e3"), Resolved::Float(12000.0));
        assert_eq!(resolve_plain("yes"), Resolved::Str);
        assert_eq!(resolve_plain("True"), Resolved::Bool(true));
        assert_eq!(resolve_plain("~"), Resolved::Null);
        assert_eq!(resolve_plain("."), Resolved::Str);
        assert_eq!(resolve_plain("1e"), Resolved::Str);
        assert_eq!(resolve_plain("0x"), Resolved::Str);
    }

    #[test]
    fn yaml11_differences() {
        assert!(yaml11_reading("yes").is_some());
        assert!(yaml11_reading("OFF").is_some());
        assert_eq!(yaml11_reading("010").as_deref(), Some("the octal number 8"));
        assert!(yaml11_reading("09").is_some());
        assert!(yaml11_reading("0o17").is_some());
        assert!(yaml11_reading("1_000").is_some());
        assert_eq!(yaml11_reading("0"), None);
        assert_eq!(yaml11_reading("10"), None);
        assert_eq!(yaml11_reading("true"), None);
        assert_eq!(yaml11_reading("k8s01"), None);
    }
}
