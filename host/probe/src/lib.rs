//! What a provider's machine has, and whether it is under memory pressure.
//!
//! A host puts [`hardware()`] and [`PressureMonitor::sample`] into its heartbeats. Everything
//! here is best effort: nothing panics, and what cannot be found is left empty or zero. Each
//! probe is a small I/O shell around a pure parser (`parse_*`), which is what the tests cover.

mod cmd;
mod gpu;
mod pressure;

pub use gpu::{gpus, parse_nvidia_smi, parse_rocm_smi, parse_system_profiler};
pub use pressure::{PressureMonitor, PressureThresholds, VmCounters, parse_vmstat, rates};
pub use wasmesh_api::wire::{Gpu, Hardware, MemoryPressure};

/// This machine's memory in bytes (0 when it cannot be read), without probing GPUs:
/// what a share such as `memory = "50%"` is a share of.
pub fn memory_bytes() -> u64 {
    cpu_and_memory().2
}

/// This machine's CPU model, logical cores, memory, GPUs, OS and architecture.
///
/// On Linux this reads `/proc/cpuinfo` and `/proc/meminfo`; on macOS it asks `sysctl`. GPUs come
/// from [`gpus()`]. Fields that cannot be found are empty or zero.
pub fn hardware() -> Hardware {
    let (cpu_model, cpu_cores, memory_bytes) = cpu_and_memory();
    let fallback_cores = || std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(0));
    Hardware {
        cpu_model,
        cpu_cores: if cpu_cores == 0 { fallback_cores() } else { cpu_cores },
        memory_bytes,
        gpus: gpus(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

#[cfg(target_os = "linux")]
fn cpu_and_memory() -> (String, u32, u64) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let model = parse_cpu_model(&cpuinfo).unwrap_or_default();
    (model, parse_cpu_count(&cpuinfo), parse_mem_total(&meminfo).unwrap_or(0))
}

#[cfg(target_os = "macos")]
fn cpu_and_memory() -> (String, u32, u64) {
    let sysctl = |name: &str| cmd::run("sysctl", &["-n", name]).map(|out| out.trim().to_string());
    let model = sysctl("machdep.cpu.brand_string").unwrap_or_default();
    let cores = sysctl("hw.logicalcpu").and_then(|s| s.parse().ok()).unwrap_or(0);
    let memory = sysctl("hw.memsize").and_then(|s| s.parse().ok()).unwrap_or(0);
    (model, cores, memory)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn cpu_and_memory() -> (String, u32, u64) {
    (String::new(), 0, 0)
}

/// The CPU feature class of this machine: its architecture and the instruction-set
/// extensions inference kernels use (`x86_64+avx+avx2+f16c+fma`). Replays of a request
/// are compared bit for bit only between nodes of one class.
pub fn cpu_class() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    parse_cpu_class(&cpuinfo, std::env::consts::ARCH)
}

/// [`cpu_class`] from the text of `/proc/cpuinfo` (its first `flags` or `Features` line)
/// and the architecture.
pub fn parse_cpu_class(cpuinfo: &str, arch: &str) -> String {
    const KERNEL_FEATURES: [&str; 18] = [
        "sse4_2",
        "avx",
        "avx2",
        "bmi2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "asimd",
        "asimddp",
        "i8mm",
        "sve",
        "sve2",
        "bf16",
    ];
    let flags: Vec<&str> = proc_fields(cpuinfo)
        .find(|(k, _)| *k == "flags" || *k == "Features")
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    let mut class = arch.to_string();
    for feature in KERNEL_FEATURES.iter().filter(|f| flags.contains(f)) {
        class.push('+');
        class.push_str(feature);
    }
    class
}

/// `key : value` pairs of a `/proc` file, keys and values trimmed.
fn proc_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| line.split_once(':')).map(|(k, v)| (k.trim(), v.trim()))
}

/// The CPU model named in `/proc/cpuinfo`.
///
/// x86 kernels write `model name`. arm64 kernels write only `CPU implementer` and `CPU part`,
/// which are named from a small table of common cores (else shown raw); some boards add
/// `Hardware` or `Model` lines, used when nothing better is there.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| proc_fields(cpuinfo).find(|(k, v)| *k == name && !v.is_empty()).map(|(_, v)| v);
    if let Some(name) = field("model name").or_else(|| field("cpu model")) {
        return Some(name.to_string());
    }
    if let (Some(implementer), Some(part)) = (field("CPU implementer"), field("CPU part")) {
        return Some(arm_core_name(implementer, part));
    }
    field("Hardware").or_else(|| field("Model")).map(str::to_string)
}

/// A name for an arm64 core from its MIDR implementer and part numbers.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn arm_core_name(implementer: &str, part: &str) -> String {
    let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let name = match (hex(implementer), hex(part)) {
        (Some(0x41), Some(0xd03)) => "ARM Cortex-A53",
        (Some(0x41), Some(0xd08)) => "ARM Cortex-A72",
        (Some(0x41), Some(0xd0b)) => "ARM Cortex-A76",
        (Some(0x41), Some(0xd0c)) => "ARM Neoverse-N1",
        (Some(0x41), Some(0xd40)) => "ARM Neoverse-V1",
        (Some(0x41), Some(0xd49)) => "ARM Neoverse-N2",
        (Some(0x41), Some(0xd4f)) => "ARM Neoverse-V2",
        (Some(0x48), Some(0xd01)) => "HiSilicon Kunpeng-920",
        (Some(0xc0), Some(0xac3)) => "Ampere-1",
        _ => return format!("ARM implementer {implementer} part {part}"),
    };
    name.to_string()
}

/// Logical processors listed in `/proc/cpuinfo` (one `processor` entry each).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cpu_count(cpuinfo: &str) -> u32 {
    let count = proc_fields(cpuinfo).filter(|(k, _)| *k == "processor").count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let (_, value) = proc_fields(meminfo).find(|(k, _)| *k == "MemTotal")?;
    let mut parts = value.split_whitespace();
    let number: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n\
        model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\nstepping\t: 7\ncpu MHz\t\t: 2100.000\n\
        flags\t\t: fpu vme de pse tsc msr pae mce\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n\
        model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\nflags\t\t: fpu vme de pse tsc msr pae mce\n\n";

    const ARM64_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 50.00\n\
        Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n\
        processor\t: 1\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\n\
        CPU part\t: 0xd0c\nCPU revision\t: 1\n\nprocessor\t: 2\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n\
        processor\t: 3\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n";

    const RPI_CPUINFO: &str = "processor\t: 0\nCPU implementer\t: 0x42\nCPU part\t: 0x516\n\n\
        Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";

    #[test]
    fn cpuinfo_x86() {
        assert_eq!(parse_cpu_model(X86_CPUINFO).as_deref(), Some("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"));
        assert_eq!(parse_cpu_count(X86_CPUINFO), 2);
    }

    #[test]
    fn cpuinfo_arm64() {
        assert_eq!(parse_cpu_model(ARM64_CPUINFO).as_deref(), Some("ARM Neoverse-N1"));
        assert_eq!(parse_cpu_count(ARM64_CPUINFO), 4);
        assert_eq!(parse_cpu_model(RPI_CPUINFO).as_deref(), Some("ARM implementer 0x42 part 0x516"));
        assert_eq!(arm_core_name("0xc0", "0xac3"), "Ampere-1");
        let board_only = "processor\t: 0\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 3\n";
        assert_eq!(parse_cpu_model(board_only).as_deref(), Some("BCM2835"));
    }

    #[test]
    fn cpu_class_names_the_kernels_features_in_a_fixed_order() {
        let x86 =
            "processor\t: 0\nflags\t\t: fpu fma avx2 sse4_2 avx f16c bmi2 pni\n\nprocessor\t: 1\nflags\t\t: fpu\n";
        assert_eq!(parse_cpu_class(x86, "x86_64"), "x86_64+sse4_2+avx+avx2+bmi2+fma+f16c");
        let arm = "processor\t: 0\nFeatures\t: fp asimd asimddp sve i8mm\n";
        assert_eq!(parse_cpu_class(arm, "aarch64"), "aarch64+asimd+asimddp+i8mm+sve");
        assert_eq!(parse_cpu_class("", "x86_64"), "x86_64");
    }

    #[test]
    fn cpuinfo_garbage() {
        assert_eq!(parse_cpu_model(""), None);
        assert_eq!(parse_cpu_count("no colons here\n"), 0);
    }

    #[test]
    fn meminfo() {
        let sample = "MemTotal:       32791452 kB\nMemFree:         1236240 kB\nMemAvailable:   20315388 kB\n";
        assert_eq!(parse_mem_total(sample), Some(32_791_452 * 1024));
        assert_eq!(parse_mem_total("MemFree: 12 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn real_hardware() {
        let hw = hardware();
        assert!(hw.cpu_cores >= 1, "{hw:?}");
        assert!(hw.memory_bytes > 0, "{hw:?}");
        assert!(!hw.cpu_model.is_empty(), "{hw:?}");
        assert_eq!(hw.os, "linux");
        assert!(!hw.arch.is_empty());
    }
}
