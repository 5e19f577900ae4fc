//! Hostile input is contained: decompression bombs (declared in a header, and real: 400
//! megapixels of zeros in 2.5 MB), truncated, corrupt and mutated files each get a status, with
//! memory bounded and no panic or hang. The mutation test runs 2,000 cases here; set
//! `CLIPTTA_FUZZ_CASES` for more.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cliptta::image::{decode, decode_and_preprocess, DecodeLimits};
use cliptta::model::PreprocessorConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::{image_bytes, tiny_model, write_lake};

/// Deflate bits, least significant first, as the format packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn push(&mut self, value: u64, len: u32) {
        self.acc |= value << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, whose bits go most significant first.
    fn code(&mut self, code: u64, len: u32) {
        for i in (0..len).rev() {
            self.push((code >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zlib stream of `n` zero bytes (n >= 1): one fixed-Huffman block, a literal zero, then
/// copies of 258 bytes at distance 1 (13 bits each), then literal zeros.
fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.push(1, 1); // final block
    bits.push(1, 2); // fixed Huffman codes
    let literal_zero = |b: &mut Bits| b.code(0x30, 8);
    literal_zero(&mut bits);
    let copies = (n - 1) / 258;
    for _ in 0..copies {
        bits.code(0xc5, 8); // length 258 (symbol 285, no extra bits)
        bits.code(0, 5); // distance 1
    }
    for _ in 0..(n - 1 - copies * 258) {
        literal_zero(&mut bits);
    }
    bits.code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend(bits.finish());
    // Adler-32 of zeros: a stays 1, b adds 1 a byte.
    let adler = ((n % 65521) << 16) | 1;
    out.extend((adler as u32).to_be_bytes());
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend(kind);
    out.extend(data);
    out.extend(crc.finalize().to_be_bytes());
}

/// An 8-bit greyscale PNG declaring `w` x `h`, whose data is `rows` rows of zeros.
fn zero_png(w: u32, h: u32, rows: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_zeros(u64::from(rows) * (u64::from(w) + 1)));
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn the_zero_png_is_a_valid_image() {
    let img = decode(&zero_png(300, 200, 200), &DecodeLimits::default()).unwrap();
    assert_eq!((img.width(), img.height()), (300, 200));
    assert!(img.to_luma8().iter().all(|&v| v == 0));
}

#[test]
fn bombs_are_refused_before_their_pixels_are_allocated() {
    let declared = zero_png(100_000, 100_000, 1);
    let err = decode(&declared, &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.to_string(), "width 100000 exceeds the limit of 16384");
    let real = zero_png(20_000, 20_000, 20_000);
    assert!(real.len() < 3 << 20, "{} bytes", real.len());
    let err = decode(&real, &DecodeLimits { max_dimension: 20_000, ..DecodeLimits::default() }).unwrap_err();
    assert_eq!(err.to_string(), "pixel count 400000000 exceeds the limit of 64000000");
}

/// Peak resident memory printed by `cliptta label`, in MiB.
fn peak_mib(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("peak memory: ")).unwrap_or_else(|| panic!("no peak memory in\n{stdout}"));
    line.trim_start_matches("peak memory: ").trim_end_matches(" MiB").parse().expect("MiB")
}

#[test]
fn a_bomb_in_a_lake_is_a_row_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    write_lake(&lake);
    std::fs::File::create(lake.join("bomb.png")).unwrap().write_all(&zero_png(20_000, 20_000, 20_000)).unwrap();
    std::fs::write(lake.join("declared.png"), zero_png(100_000, 100_000, 1)).unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cliptta"));
        cmd.args(["label", lake.to_str().unwrap(), "--out", out.to_str().unwrap(), "--classes", "cat,dog", "--model", &tiny_model(), "--quiet"]);
        cmd.args(["--adapt-batch-size", "4", "--steps", "1"]).args(extra);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Default limits: the bomb is refused from its header.
    let stdout = run(&dir.path().join("a.parquet"), &[]);
    assert!(stdout.contains("status: ok 7, decode_error 4, too_large 2"), "{stdout}");
    let peak = peak_mib(&stdout);
    println!("peak memory with the bomb refused: {peak} MiB");
    assert!(peak < 512, "peak memory {peak} MiB with a 400-megapixel bomb refused by its header");
    // Limits raised to admit it: decoded (8-bit grey, one byte a pixel, 381 MiB) and labelled,
    // and memory stays within its pixels plus the same 512 MiB.
    let stdout = run(&dir.path().join("b.parquet"), &["--max-pixels", "400000000", "--max-dimension", "20000", "--max-bytes", "100000000"]);
    assert!(stdout.contains("status: ok 8, decode_error 4, too_large 1"), "{stdout}");
    let peak = peak_mib(&stdout);
    println!("peak memory with the bomb decoded: {peak} MiB");
    assert!(peak < 381 + 512, "peak memory {peak} MiB decoding a 400-megapixel image");
}

/// Valid small images of every format, the mutation seeds.
fn seeds() -> Vec<Vec<u8>> {
    use image::ImageFormat::*;
    let mut seeds: Vec<Vec<u8>> = [Png, Jpeg, Gif, Bmp, Tiff, WebP].into_iter().map(|f| image_bytes(24, 16, 7, f)).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/formats");
    for name in ["jpeg_rgb_progressive.jpg", "jpeg_cmyk.jpg", "jpeg_exif_6.jpg", "png_p_trns.png", "png_rgb16.png", "gif_animated.gif", "tiff_rgb_lzw.tif", "webp_lossy_rgba.webp", "bmp_1bit.bmp", "png_rgb8_interlaced.png"] {
        seeds.push(std::fs::read(format!("{dir}/{name}")).expect("fixture"));
    }
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Copies a range over another place (repeats structure, e.g. chunk headers).
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize, len: usize| i % len.max(1);
    match m {
        Mutation::Set(i, b) => {
            let i = at(*i, bytes.len());
            bytes[i] = *b;
        }
        Mutation::Flip(i, bit) => {
            let i = at(*i, bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i, bytes.len())),
        Mutation::Insert(i, v) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Splice(a, b, n) => {
            let (a, b) = (at(*a, bytes.len()), at(*b, bytes.len()));
            let n = (*n).min(bytes.len() - a).min(bytes.len() - b);
            let piece: Vec<u8> = bytes[a..a + n].to_vec();
            bytes[b..b + n].copy_from_slice(&piece);
        }
    }
}

#[test]
fn mutated_images_never_panic_or_hang() {
    let cases = std::env::var("CLIPTTA_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let seeds = seeds();
    // Tight limits keep a mutated header from asking for a large (but allowed) image.
    let limits = DecodeLimits { max_bytes: 1 << 20, max_pixels: 1 << 20, max_dimension: 4096 };
    let cfg = PreprocessorConfig::clip_default(32);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(seed, mutations)| {
            let mut bytes = seeds[seed].clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let input = bytes.clone();
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = tx.send(decode_and_preprocess(&input, &limits, &cfg).map(|v| v.len()));
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(len)) => prop_assert_eq!(len, 3 * 32 * 32),
                // A decoder panic is caught and reported as a decode error; the fuzz test
                // still counts it as a finding.
                Ok(Err(e)) => prop_assert!(!e.to_string().contains("panicked"), "{e}"),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => prop_assert!(false, "decode or preprocess panicked"),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => prop_assert!(false, "decode did not finish in 20 s ({} bytes)", bytes.len()),
            }
            Ok(())
        })
        .unwrap();
}
