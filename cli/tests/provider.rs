//! `wasmesh provider install|uninstall`: the files it writes are what systemd and launchd
//! accept, hold the key readable by the owner only, and go away again.

use std::path::Path;
use std::process::Command;

fn wasmesh(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WASMESH_HOST_CONFIG")
        .env_remove("WASMESH_HOST_DATA")
        .output()
        .expect("run the wasmesh binary")
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-provider-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const KEY: &str = "wsk_0123456789ab_0123456789abcdef0123456789abcdef0123456789abcdef";

fn install(home: &Path, manager: &str) -> serde_json::Value {
    let out = wasmesh(
        home,
        &[
            "provider",
            "install",
            "--registry",
            "http://127.0.0.1:7070",
            "--key",
            KEY,
            "--router",
            "127.0.0.1:7443",
            "--memory",
            "40%",
            "--threads",
            "2",
            "--upload-kib-s",
            "512",
            "--manager",
            manager,
            "--user",
            "--no-start",
            "--json",
        ],
    );
    assert!(out.status.success(), "install failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("install --json prints JSON")
}

#[test]
fn a_systemd_unit_that_systemd_accepts_and_uninstall_removes() {
    let home = scratch("systemd");
    let answer = install(&home, "systemd");
    let unit = Path::new(answer["layout"]["unit"].as_str().unwrap()).to_path_buf();
    let config = Path::new(answer["layout"]["config"].as_str().unwrap()).to_path_buf();
    assert!(unit.starts_with(&home) && config.starts_with(&home), "a user install stays in HOME: {answer}");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in ["Restart=on-failure", "KillSignal=SIGTERM", "WantedBy=default.target"] {
        assert!(text.lines().any(|l| l == line), "unit lacks {line}:\n{text}");
    }
    let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    assert!(exec.contains(" host --config ") && exec.contains(config.to_str().unwrap()), "{exec}");
    // Sections and keys parse as a unit file: every line a section, a key=value, a comment or blank.
    let mut section = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "{line}");
            section = line.to_string();
        } else {
            assert!(!section.is_empty() && line.split_once('=').is_some_and(|(k, _)| !k.is_empty()), "{line}");
        }
    }
    // systemd's own check, where systemd is installed (Debian's CI image has it).
    match Command::new("systemd-analyze").arg("verify").arg(&unit).output() {
        Ok(out) => {
            // It exits 0 on some mistakes, so also no complaint may name the file.
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let file = unit.file_name().unwrap().to_str().unwrap();
            assert!(out.status.success() && !said.contains(file), "systemd-analyze verify refused the unit: {said}");
        }
        Err(e) => eprintln!("systemd-analyze not available ({e}); the unit was checked by this test's parser"),
    }
    // The config holds the key: the owner alone may read it.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("memory = \"40%\"") && toml.contains("upload_kib_s = 512"), "{toml}");

    let out = wasmesh(&home, &["provider", "uninstall", "--manager", "systemd", "--user", "--json"]);
    assert!(out.status.success(), "uninstall failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!unit.exists() && !config.exists(), "uninstall leaves nothing behind");
    let data = Path::new(answer["layout"]["data"].as_str().unwrap());
    assert!(data.exists(), "the data directory stays without --purge");
}

#[test]
fn a_launchd_agent_that_parses_as_a_property_list() {
    let home = scratch("launchd");
    let answer = install(&home, "launchd");
    let plist = Path::new(answer["layout"]["unit"].as_str().unwrap()).to_path_buf();
    assert!(plist.ends_with("Library/LaunchAgents/dev.wasmesh.host.plist"), "{}", plist.display());
    // Python's plistlib is a strict property-list parser (python3 is a test prerequisite).
    let script = "import plistlib,sys,json; d=plistlib.load(open(sys.argv[1],'rb')); print(json.dumps(d))";
    let out = Command::new("python3").args(["-c", script]).arg(&plist).output().expect("python3 runs");
    assert!(out.status.success(), "not a property list: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["Label"], "dev.wasmesh.host");
    let args: Vec<&str> = parsed["ProgramArguments"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[1..3], ["host", "--config"], "{args:?}");
    assert_eq!(parsed["KeepAlive"]["SuccessfulExit"], false);
    let out = wasmesh(&home, &["provider", "uninstall", "--manager", "launchd", "--user", "--purge"]);
    assert!(out.status.success(), "uninstall failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!plist.exists());
    assert!(!Path::new(answer["layout"]["data"].as_str().unwrap()).exists(), "--purge removes the data directory");
}

#[test]
fn a_bad_config_file_is_named_before_anything_starts() {
    let home = scratch("badconfig");
    let file = home.join("provider.toml");
    std::fs::write(&file, "registry = \"http://x\"\nkey = \"k\"\ndata = \"/tmp/x\"\nmemory = \"lots\"\n").unwrap();
    let out = wasmesh(&home, &["host", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'lots' is not a memory amount"), "{err}");
    std::fs::write(&file, "registry = \"http://x\"\nkey = \"k\"\ndata = \"/tmp/x\"\nmemroy = \"50%\"\n").unwrap();
    let out = wasmesh(&home, &["host", "--config", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memroy"), "an unknown key is named: {err}");
}

#[test]
fn control_commands_name_the_missing_host() {
    let home = scratch("control");
    let out = wasmesh(&home, &["host", "status", "--data", home.join("nowhere").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no host is running with data directory") && err.contains("--data"), "{err}");
}
