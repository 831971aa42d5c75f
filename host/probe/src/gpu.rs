//! GPUs, as the vendors' tools report them: `nvidia-smi`, `rocm-smi` and, on macOS, `system_profiler`.

use crate::cmd;
use serde_json::Value;
use wasmesh_api::wire::Gpu;

const MIB: u64 = 1024 * 1024;

/// The GPUs on this machine, from whichever of `nvidia-smi`, `rocm-smi` and (on macOS)
/// `system_profiler` are installed. Each tool gets a few seconds and is killed if it hangs;
/// a missing or failing tool contributes nothing.
pub fn gpus() -> Vec<Gpu> {
    let mut found = Vec::new();
    if let Some(out) = cmd::run("nvidia-smi", &["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]) {
        found.extend(parse_nvidia_smi(&out));
    }
    if let Some(out) = cmd::run("rocm-smi", &["--showproductname", "--showmeminfo", "vram", "--json"]) {
        found.extend(parse_rocm_smi(&out));
    }
    if cfg!(target_os = "macos")
        && let Some(out) = cmd::run("system_profiler", &["SPDisplaysDataType", "-json"])
    {
        found.extend(parse_system_profiler(&out));
    }
    found
}

/// Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`: one
/// `NAME, MiB` line per GPU. A memory of `[N/A]` (or anything unparsable) becomes 0; lines
/// without a comma (error messages) are skipped.
pub fn parse_nvidia_smi(output: &str) -> Vec<Gpu> {
    output
        .lines()
        .filter_map(|line| line.rsplit_once(','))
        .filter(|(name, _)| !name.trim().is_empty())
        .map(|(name, mib)| Gpu {
            vendor: "nvidia".to_string(),
            name: name.trim().to_string(),
            memory_bytes: mib.trim().parse::<u64>().map_or(0, |m| m.saturating_mul(MIB)),
        })
        .collect()
}

/// Parses `rocm-smi --showproductname --showmeminfo vram --json`: an object with one
/// `cardN` object per GPU. Key spellings differ across ROCm releases (`Card series` /
/// `Card Series`), so keys are matched case-insensitively; the name is the card series,
/// else the model or SKU; memory is `VRAM Total Memory (B)`. Invalid JSON gives no GPUs.
pub fn parse_rocm_smi(output: &str) -> Vec<Gpu> {
    let Ok(Value::Object(cards)) = serde_json::from_str::<Value>(output) else {
        return Vec::new();
    };
    let mut cards: Vec<(u64, &Value)> =
        cards.iter().filter_map(|(key, card)| Some((key.strip_prefix("card")?.parse().ok()?, card))).collect();
    cards.sort_by_key(|(index, _)| *index);
    cards
        .into_iter()
        .map(|(_, card)| {
            let field = |name: &str| {
                let obj = card.as_object()?;
                let value = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)?;
                let text = match value {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                // rocm-smi writes "N/A" for unknown fields, and a bare PCI id for the model.
                let useless = text.is_empty() || text.eq_ignore_ascii_case("n/a") || text.starts_with("0x");
                (!useless).then_some(text)
            };
            Gpu {
                vendor: "amd".to_string(),
                name: field("Card Series")
                    .or_else(|| field("Card Model"))
                    .or_else(|| field("Card SKU"))
                    .unwrap_or_else(|| "AMD GPU".to_string()),
                memory_bytes: field("VRAM Total Memory (B)").and_then(|m| m.parse().ok()).unwrap_or(0),
            }
        })
        .collect()
}

/// Parses `system_profiler SPDisplaysDataType -json`. Apple silicon GPUs get vendor `apple` and
/// memory 0 (unified memory); discrete GPUs in Intel Macs report `spdisplays_vram` ("8 GB");
/// integrated ones share system memory and get 0.
pub fn parse_system_profiler(output: &str) -> Vec<Gpu> {
    let Ok(root) = serde_json::from_str::<Value>(output) else {
        return Vec::new();
    };
    let Some(entries) = root.get("SPDisplaysDataType").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
            let name = text("sppci_model").or_else(|| text("_name"))?;
            let vendor = mac_vendor(text("spdisplays_vendor").unwrap_or(""), name);
            let memory_bytes = if vendor == "apple" { 0 } else { text("spdisplays_vram").map_or(0, parse_mac_size) };
            Some(Gpu { vendor, name: name.to_string(), memory_bytes })
        })
        .collect()
}

/// `sppci_vendor_Apple`, `sppci_vendor_amd`, `NVIDIA (0x10de)`, `Intel`... as a lowercase vendor.
fn mac_vendor(raw: &str, name: &str) -> String {
    let raw = raw.to_ascii_lowercase();
    let raw = raw.strip_prefix("sppci_vendor_").unwrap_or(&raw);
    let lower_name = name.to_ascii_lowercase();
    for (needle, vendor) in [("apple", "apple"), ("amd", "amd"), ("nvidia", "nvidia"), ("intel", "intel")] {
        if raw.contains(needle) || (raw.is_empty() && lower_name.starts_with(needle)) {
            return vendor.to_string();
        }
    }
    raw.split_whitespace().next().unwrap_or("").to_string()
}

/// `"8 GB"`, `"1536 MB"` as bytes (0 when unparsable).
fn parse_mac_size(size: &str) -> u64 {
    let mut parts = size.split_whitespace();
    let number = parts.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let unit = match parts.next() {
        Some("GB") => 1024 * MIB,
        Some("MB") => MIB,
        _ => 0,
    };
    number.saturating_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(vendor: &str, name: &str, memory_bytes: u64) -> Gpu {
        Gpu { vendor: vendor.into(), name: name.into(), memory_bytes }
    }

    #[test]
    fn nvidia_smi() {
        let out = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA GeForce RTX 4090, 24564\nTesla T4, [N/A]\n\n";
        assert_eq!(
            parse_nvidia_smi(out),
            vec![
                gpu("nvidia", "NVIDIA H100 80GB HBM3", 81559 * MIB),
                gpu("nvidia", "NVIDIA GeForce RTX 4090", 24564 * MIB),
                gpu("nvidia", "Tesla T4", 0),
            ]
        );
        let failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n";
        assert!(parse_nvidia_smi(failed).is_empty());
        assert!(parse_nvidia_smi("").is_empty());
    }

    #[test]
    fn rocm_smi() {
        // ROCm 6.x spelling, two MI300X, plus the unrelated "system" object some releases add.
        let v6 = r#"{"card0": {"VRAM Total Memory (B)": "205822885888", "VRAM Total Used Memory (B)": "297316352",
            "Card Series": "AMD Instinct MI300X", "Card Model": "0x74a1", "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
            "Card SKU": "M3000100", "Subsystem ID": "0x74a1", "Device Rev": "0x00", "Node ID": "2", "GUID": "28851",
            "GFX Version": "gfx942"},
            "card1": {"VRAM Total Memory (B)": "205822885888", "VRAM Total Used Memory (B)": "297316352",
            "Card Series": "AMD Instinct MI300X", "Card Model": "0x74a1", "Card SKU": "M3000100"},
            "system": {"Driver version": "6.8.5"}}"#;
        let mi300x = gpu("amd", "AMD Instinct MI300X", 205_822_885_888);
        assert_eq!(parse_rocm_smi(v6), vec![mi300x.clone(), mi300x]);
        // ROCm 5.x spelling; an unknown series falls back to the SKU; card10 sorts after card2.
        let v5 = r#"{"card2": {"Card series": "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", "Card model": "0x73bf",
            "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "Card SKU": "D4120100",
            "VRAM Total Memory (B)": "17163091968", "VRAM Total Used Memory (B)": "1021014016"},
            "card10": {"Card series": "N/A", "Card model": "0x73bf", "Card SKU": "D41205", "VRAM Total Memory (B)": 1024}}"#;
        assert_eq!(
            parse_rocm_smi(v5),
            vec![gpu("amd", "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", 17_163_091_968), gpu("amd", "D41205", 1024),]
        );
        assert!(parse_rocm_smi("WARNING: No AMD GPUs specified").is_empty());
        assert_eq!(parse_rocm_smi(r#"{"card0": {}}"#), vec![gpu("amd", "AMD GPU", 0)]);
    }

    #[test]
    fn system_profiler_apple_silicon() {
        let out = r#"{
  "SPDisplaysDataType" : [
    {
      "_name" : "Apple M2 Max",
      "spdisplays_mtlgpufamilysupport" : "spdisplays_metal3",
      "spdisplays_ndrvs" : [
        {
          "_name" : "Color LCD",
          "_spdisplays_display-product-id" : "a050",
          "_spdisplays_pixels" : "3456 x 2234",
          "spdisplays_main" : "spdisplays_yes"
        }
      ],
      "spdisplays_vendor" : "sppci_vendor_Apple",
      "sppci_bus" : "spdisplays_builtin",
      "sppci_cores" : "38",
      "sppci_device_type" : "spdisplays_gpu",
      "sppci_model" : "Apple M2 Max"
    }
  ]
}"#;
        assert_eq!(parse_system_profiler(out), vec![gpu("apple", "Apple M2 Max", 0)]);
    }

    #[test]
    fn system_profiler_intel_mac() {
        let out = r#"{"SPDisplaysDataType" : [
    {"_name" : "kHW_IntelUHDGraphics630Item", "spdisplays_automatic_graphics_switching" : "spdisplays_supported",
     "spdisplays_vendor" : "Intel", "spdisplays_vram_shared" : "1536 MB", "sppci_bus" : "spdisplays_builtin",
     "sppci_device_type" : "spdisplays_gpu", "sppci_model" : "Intel UHD Graphics 630"},
    {"_name" : "kHW_AMDRadeonPro5500MItem", "spdisplays_vendor" : "sppci_vendor_amd", "spdisplays_vram" : "8 GB",
     "sppci_bus" : "spdisplays_pcie_device", "sppci_device_type" : "spdisplays_gpu", "sppci_model" : "AMD Radeon Pro 5500M"}
  ]}"#;
        assert_eq!(
            parse_system_profiler(out),
            vec![gpu("intel", "Intel UHD Graphics 630", 0), gpu("amd", "AMD Radeon Pro 5500M", 8 * 1024 * MIB)]
        );
        assert!(parse_system_profiler("not json").is_empty());
        assert!(parse_system_profiler(r#"{"SPDisplaysDataType": "x"}"#).is_empty());
        assert_eq!(mac_vendor("NVIDIA (0x10de)", "NVIDIA GeForce GT 750M"), "nvidia");
        assert_eq!(parse_mac_size("2048 MB"), 2048 * MIB);
    }
}
