//! The worker image: `FROM scratch`, holding only a static `dbaas`
//! binary, built from this very binary and labelled with what identifies
//! it, so a stale image is built again.

use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::docker_err;
use crate::error::{Error, Result};

/// The label that tells which binary an image holds.
const BINARY_LABEL: &str = "dbaas.binary";
/// The image's recipe (its `LABEL` line is added).
const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");

/// Whether the ELF file at `path` is statically linked (no program
/// interpreter): only such a binary runs in an empty image.
pub fn is_static(path: &Path) -> Result<bool> {
    // The ELF and program headers sit at the start of the file.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path)?, 64 * 1024),
        &mut bytes,
    )?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // A little-endian ELF64 file.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(Error::bad(format!(
            "{} is not an ELF64 binary",
            path.display()
        )));
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Err(Error::bad(format!(
            "{}: truncated ELF header",
            path.display()
        )));
    };
    const PT_INTERP: u32 = 3;
    let phoff = usize::try_from(phoff).unwrap_or(usize::MAX);
    for i in 0..usize::from(count) {
        let at = phoff.saturating_add(i * usize::from(size));
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(false),
            Some(_) => {}
            None => return Err(Error::bad(format!("{}: truncated ELF", path.display()))),
        }
    }
    Ok(true)
}

/// What identifies a binary for the image label: its size and mtime.
fn binary_id(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}-{mtime}", meta.len()))
}

/// Makes sure image `tag` holds `binary` (a static `dbaas`): builds it
/// `FROM scratch` when it is missing or holds another binary.
pub async fn ensure_image(docker: &Docker, tag: &str, binary: &Path) -> Result<()> {
    let id = binary_id(binary)?;
    if let Ok(image) = docker.inspect_image(tag).await {
        let label = image
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(BINARY_LABEL).cloned());
        if label.as_deref() == Some(id.as_str()) {
            return Ok(());
        }
    }
    if !is_static(binary)? {
        return Err(Error::bad(format!(
            "{} is not a static binary, so it cannot run in an empty image; build one with docker/build",
            binary.display()
        )));
    }
    tracing::info!(tag, binary = %binary.display(), "building the worker image");
    let dockerfile = format!("{DOCKERFILE}\nLABEL {BINARY_LABEL}=\"{id}\"\n");
    let exe = std::fs::read(binary)?;
    let mut tar = Vec::with_capacity(exe.len() + 4096);
    tar_entry(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes())?;
    tar_entry(&mut tar, "dbaas", 0o755, &exe)?;
    tar.extend_from_slice(&[0; 1024]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(step) = build.next().await {
        let step = step.map_err(docker_err)?;
        if let Some(e) = step.error_detail.and_then(|d| d.message) {
            return Err(docker_err(format!("image build: {e}")));
        }
    }
    Ok(())
}

/// One file of a tar archive (ustar).
fn tar_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut h = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, len: usize, text: &str| {
        let b = text.as_bytes();
        h[at..at + b.len().min(len)].copy_from_slice(&b[..b.len().min(len)]);
    };
    if name.len() > 99 {
        return Err(Error::bad(format!("tar name {name:?} too long")));
    }
    field(&mut h, 0, 100, name);
    field(&mut h, 100, 8, &format!("{mode:07o}"));
    field(&mut h, 108, 8, "0000000");
    field(&mut h, 116, 8, "0000000");
    field(&mut h, 124, 12, &format!("{:011o}", data.len()));
    field(&mut h, 136, 12, "00000000000");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    field(&mut h, 257, 6, "ustar");
    field(&mut h, 263, 2, "00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    field(&mut h, 148, 8, &format!("{sum:06o}\0 "));
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_entries_have_valid_headers() {
        let mut tar = Vec::new();
        tar_entry(&mut tar, "Dockerfile", 0o644, b"FROM scratch\n").unwrap();
        assert_eq!(tar.len(), 1024);
        assert_eq!(&tar[257..262], b"ustar");
        let sum: u32 = tar[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let written = std::str::from_utf8(&tar[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(written, 8).unwrap(), sum);
        assert_eq!(&tar[512..525], b"FROM scratch\n");
        assert!(tar_entry(&mut tar, &"x".repeat(100), 0o644, b"").is_err());
    }

    #[test]
    fn a_dynamic_binary_is_told_from_a_static_one() {
        // This test binary is linked as the build says; /bin/sh never is.
        if Path::new("/bin/sh").exists() {
            let sh = std::fs::canonicalize("/bin/sh").unwrap();
            assert!(!is_static(&sh).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not an elf").unwrap();
        assert!(is_static(&junk).is_err());
    }
}
