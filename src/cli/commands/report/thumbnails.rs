//! Thumbnails for the report: images read from their `location` on this machine, downscaled to
//! at most [`MAX_SIDE`] pixels a side and inlined as base64 PNG `data:` URIs, so the page
//! carries them and fetches nothing when opened.
//!
//! Only local locations are read, plain paths and `file://` URLs: the report looks at a
//! finished run, it is not a second pass over a remote lake with its credentials, so objects
//! of other stores are listed as not fetched. An image that cannot be read or decoded is listed
//! with the reason rather than failing the page: the run's numbers are still worth having.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::Context;
// The standard alphabet with padding: what `data:` URIs take (RFC 2397 uses RFC 2045's base64).
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cliptta::image::{decode, DecodeLimits};
use image::{DynamicImage, ImageFormat};
use serde::Serialize;

/// Largest width or height of a thumbnail, in pixels.
pub const MAX_SIDE: u32 = 64;

/// An image to show, with its caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The row's `location`.
    pub location: String,
    /// Text under the image.
    pub caption: String,
}

/// A titled row of images to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Heading of the row.
    pub title: String,
    /// The images, in order.
    pub requests: Vec<Request>,
}

/// One image on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thumbnail {
    /// The row's `location`.
    pub location: String,
    /// Text under the image.
    pub caption: String,
    /// `data:image/png;base64,...`.
    pub src: String,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// A titled row of thumbnails.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThumbnailGroup {
    /// Heading of the row.
    pub title: String,
    /// The images that could be shown.
    pub thumbnails: Vec<Thumbnail>,
}

/// An image that is not on the page, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The row's `location`.
    pub location: String,
    /// Not fetched (another store), not found, not decodable, ...
    pub reason: String,
}

/// Everything the thumbnails section shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Thumbnails {
    /// The rows of images, in request order.
    pub groups: Vec<ThumbnailGroup>,
    /// Each location that could not be shown, once.
    pub skipped: Vec<Skipped>,
}

/// A thumbnail's PNG as a `data:` URI, and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// `data:image/png;base64,...`.
    pub src: String,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// Reads, downscales and encodes every requested image, each location once however many rows
/// show it. Blocking (file reads and decoding): run it with `spawn_blocking`.
pub fn build(groups: Vec<Group>) -> Thumbnails {
    let mut encoded: HashMap<String, Result<Encoded, String>> = HashMap::new();
    let mut out = Thumbnails::default();
    for group in groups {
        let mut thumbnails = Vec::new();
        for request in group.requests {
            // `{:#}` keeps the causes: "cannot decode /x.png: unrecognised image format".
            let result = encoded.entry(request.location.clone()).or_insert_with(|| encode_location(&request.location).map_err(|e| format!("{e:#}")));
            match result {
                Ok(e) => thumbnails.push(Thumbnail {
                    location: request.location,
                    caption: request.caption,
                    src: e.src.clone(),
                    width: e.width,
                    height: e.height,
                }),
                Err(reason) => {
                    if !out.skipped.iter().any(|s| s.location == request.location) {
                        out.skipped.push(Skipped { location: request.location, reason: reason.clone() });
                    }
                }
            }
        }
        out.groups.push(ThumbnailGroup { title: group.title, thumbnails });
    }
    out
}

/// The thumbnail of the image at `location`.
fn encode_location(location: &str) -> anyhow::Result<Encoded> {
    encode_file(&local_path(location)?)
}

/// Where `location` is on this machine: a plain path as it is, a `file://` URL as its path
/// (percent-decoded: the object store's URLs encode characters such as `%` and `#`); an error
/// naming the scheme for any other store.
pub fn local_path(location: &str) -> anyhow::Result<PathBuf> {
    match location.split_once("://") {
        None => Ok(PathBuf::from(location)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("file") => url::Url::parse(location)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .with_context(|| format!("{location} is not a local file URL")),
        Some((scheme, _)) => anyhow::bail!("not fetched: the report reads local files only, not {scheme}:// objects"),
    }
}

/// The thumbnail of the image file at `path`: decoded under the same limits as a labelling
/// run (so a decompression bomb in the lake cannot take the report down), EXIF orientation
/// applied, downscaled to fit [`MAX_SIDE`] (never enlarged), encoded as 8-bit RGBA PNG (PNG
/// has no float formats, and RGBA takes every decoded colour type).
pub fn encode_file(path: &Path) -> anyhow::Result<Encoded> {
    let limits = DecodeLimits::default();
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    anyhow::ensure!(size <= limits.max_bytes, "{} has {size} bytes, more than the {} an image may have", path.display(), limits.max_bytes);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let image = decode(&bytes, &limits).with_context(|| format!("cannot decode {}", path.display()))?;
    let small = downscale(image);
    let (width, height) = (small.width(), small.height());
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(small.to_rgba8())
        .write_to(&mut png, ImageFormat::Png)
        .with_context(|| format!("cannot encode the thumbnail of {}", path.display()))?;
    Ok(Encoded { src: format!("data:image/png;base64,{}", STANDARD.encode(png.into_inner())), width, height })
}

/// `image` scaled to fit in `MAX_SIDE` a side, keeping its aspect ratio; small images are kept
/// as they are (the page enlarges them with CSS, without inventing pixels).
fn downscale(image: DynamicImage) -> DynamicImage {
    if image.width() <= MAX_SIDE && image.height() <= MAX_SIDE {
        image
    } else {
        // Each source pixel lands in one target pixel (an area average), which is what a
        // thumbnail wants, and much cheaper than a filtered resize.
        image.thumbnail(MAX_SIDE, MAX_SIDE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn decoded(src: &str) -> DynamicImage {
        let b64 = src.strip_prefix("data:image/png;base64,").expect("a PNG data URI");
        image::load_from_memory(&STANDARD.decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn locations_are_local_paths_or_not_fetched() {
        assert_eq!(local_path("/data/a.png").unwrap(), PathBuf::from("/data/a.png"));
        assert_eq!(local_path("file:///data/a%20b%25.png").unwrap(), PathBuf::from("/data/a b%.png"));
        let remote = local_path("s3://bucket/a.png").unwrap_err().to_string();
        assert!(remote.contains("not fetched") && remote.contains("s3://"), "{remote}");
    }

    #[test]
    fn large_images_shrink_and_small_ones_keep_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let (wide, small) = (dir.path().join("wide.png"), dir.path().join("small.png"));
        std::fs::write(&wide, png(200, 100)).unwrap();
        std::fs::write(&small, png(28, 28)).unwrap();
        let w = encode_file(&wide).unwrap();
        assert_eq!((w.width, w.height), (64, 32));
        assert_eq!((decoded(&w.src).width(), decoded(&w.src).height()), (64, 32));
        let s = encode_file(&small).unwrap();
        assert_eq!((s.width, s.height), (28, 28));
    }

    #[test]
    fn failures_are_listed_once_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.png");
        let bad = dir.path().join("bad.png");
        std::fs::write(&good, png(10, 10)).unwrap();
        std::fs::write(&bad, b"not an image").unwrap();
        let request = |p: &Path| Request { location: format!("file://{}", p.display()), caption: String::new() };
        let missing = dir.path().join("missing.png");
        let groups = vec![
            Group { title: "a".into(), requests: vec![request(&good), request(&bad), request(&missing)] },
            Group { title: "b".into(), requests: vec![request(&bad), request(&good), Request { location: "http://x/y.png".into(), caption: String::new() }] },
        ];
        let out = build(groups);
        assert_eq!(out.groups.iter().map(|g| g.thumbnails.len()).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(out.skipped.len(), 3, "{:?}", out.skipped);
        assert!(out.skipped[0].reason.contains(&bad.display().to_string()), "{:?}", out.skipped[0]);
        assert!(out.skipped[1].reason.contains(&missing.display().to_string()), "{:?}", out.skipped[1]);
        assert!(out.skipped[2].reason.contains("not fetched"));
    }
}
