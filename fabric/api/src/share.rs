//! What a provider lends, as written in `provider.toml` and `wasmesh host set`: memory
//! as a share of the machine (`50%`) or an amount (`8GiB`, `512MiB`, or MiB alone),
//! counts (`requests=8`). Parsed here once, exactly, in integers.

/// A memory amount: `P%` of `total_bytes`, `N` with a unit (`KiB`, `MiB`, `GiB`, `TiB`,
/// or `K`, `M`, `G`, `T`; powers of 1024), or a bare number of MiB.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_memory(spec: &str, total_bytes: u64) -> Result<u64, String> {
    let spec = spec.trim();
    let bad =
        || format!("'{spec}' is not a memory amount: write a share of the machine (50%) or an amount (8GiB, 512MiB)");
    if let Some(percent) = spec.strip_suffix('%') {
        let p: u64 = percent.trim().parse().map_err(|_| bad())?;
        if p == 0 || p > 100 {
            return Err(format!("'{spec}': a share of memory is 1% to 100%"));
        }
        return Ok((u128::from(total_bytes) * u128::from(p) / 100) as u64);
    }
    let digits = spec.find(|c: char| !c.is_ascii_digit()).unwrap_or(spec.len());
    let (number, unit) = spec.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mib" | "mb" => 20,
        "k" | "kib" | "kb" => 10,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("'{spec}': a memory amount must be more than zero"));
    }
    Ok(bytes)
}

/// A count of at least one (`requests=8`, `threads=4`).
///
/// # Errors
/// A message naming what was expected.
pub fn parse_count(what: &str, spec: &str) -> Result<u32, String> {
    match spec.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{spec}' is not a valid {what}: write a whole number of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_amounts_and_bare_mib() {
        assert_eq!(parse_memory("50%", 8 << 30), Ok(4 << 30));
        assert_eq!(parse_memory("8GiB", 0), Ok(8 << 30));
        assert_eq!(parse_memory("512M", 0), Ok(512 << 20));
        assert_eq!(parse_memory("2048", 0), Ok(2048 << 20));
        assert!(parse_memory("0%", 1).is_err());
        assert!(parse_memory("101%", 1).is_err());
        assert!(parse_memory("lots", 1).unwrap_err().contains("50%"));
        assert!(parse_memory("99999999999999T", 1).is_err(), "overflow is refused, not wrapped");
        assert_eq!(parse_count("request count", "8"), Ok(8));
        assert!(parse_count("request count", "0").is_err());
    }
}
