//! The binary without a database: exit codes, determinism through the CLI.

use std::process::Command;

fn seeder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seeder"))
        .args(args)
        .env_remove("INGEST_DATABASE_URL")
        .output()
        .expect("run seeder")
}

fn summary_field(out: &std::process::Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key}= in {stdout:?}"))
}

#[test]
fn bad_arguments_exit_with_code_2_and_a_message() {
    for args in [
        &["--start", "yesterday", "--dry-run"][..],
        &["--interval", "0s", "--dry-run"],
        &[
            "--start",
            "2025-01-02T00:00:00Z",
            "--end",
            "2025-01-01T00:00:00Z",
            "--dry-run",
        ],
        &["--metrics", "gpu", "--dry-run"],
        &["--duration", "1h"], // no database anywhere
        &["--no-such-flag"],
    ] {
        let out = seeder(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn same_seed_same_hash_other_seed_other_hash() {
    let run = |seed: &str| {
        let out = seeder(&[
            "--servers",
            "4",
            "--start",
            "2025-11-15T00:00:00Z",
            "--duration",
            "3h",
            "--seed",
            seed,
            "--dry-run",
            "-q",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "--quiet prints nothing on stderr");
        (
            summary_field(&out, "hash"),
            summary_field(&out, "rows"),
            summary_field(&out, "seed"),
        )
    };
    let a = run("42");
    let b = run("42");
    let c = run("43");
    assert_eq!(a, b);
    assert_eq!(a.2, "42");
    assert_ne!(a.0, c.0);
}

#[test]
fn output_file_is_a_binary_copy_stream_and_seed_is_printed() {
    let path = std::env::temp_dir().join(format!("seeder-cli-{}.bin", std::process::id()));
    let out = seeder(&[
        "--servers",
        "2",
        "--start",
        "2025-11-15T00:00:00Z",
        "--duration",
        "10m",
        "--anomaly-rate",
        "0",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed="), "the seed is announced: {err}");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(bytes.starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert!(bytes.ends_with(&[0xff, 0xff]));
    // 2 servers × 4 metrics × 600 s, rows of 50 or 52 bytes (metric names 3–7).
    assert_eq!(summary_field(&out, "rows"), "4800");
    let per_row: usize = ["cpu", "memory", "disk_io", "network"]
        .iter()
        .map(|m| 2 + 4 + 5 + 4 + m.len() + 24)
        .sum();
    assert_eq!(bytes.len(), 19 + 2 + 2 * 600 * per_row);
}
