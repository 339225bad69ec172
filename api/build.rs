//! Hashes the console's assets into `UI_ASSETS_HASH`: their URLs carry it, so browsers
//! may cache them for a year and still never run a stale copy after an upgrade.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=assets");
    let mut files = Vec::new();
    collect(Path::new("assets"), &mut files);
    files.sort();
    // FNV-1a over names and contents: no dependency, stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        for b in path.to_string_lossy().bytes().chain(bytes) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=UI_ASSETS_HASH={hash:016x}");
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
