//! Parsing a user's location string into a store URL, a listing prefix and an optional glob.

use std::fmt;
use std::str::FromStr;

use globset::{GlobBuilder, GlobMatcher};
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// A parsed image location: `s3://bucket/photos/**/*.jpg` is the store `s3://bucket/`, the
/// prefix `photos` and the glob `photos/**/*.jpg` (matched against whole object paths; `*` stays
/// within one path segment, `**` crosses them).
#[derive(Debug, Clone)]
pub struct ImageLocation {
    original: String,
    store_url: Url,
    prefix: Path,
    glob: Option<GlobMatcher>,
    extensions: Extensions,
}

const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// The file extensions a directory or prefix lists by default (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Which objects under a directory or prefix are listed, by file extension (the `extensions`
/// option). The content decides the format when an image is decoded; the extension only
/// decides what is listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Extensions {
    /// Every object (`'*'`).
    All,
    /// Objects whose extension is one of these (lower case, no dot), in any case.
    Only(Vec<String>),
}

impl Default for Extensions {
    /// [`IMAGE_EXTENSIONS`].
    fn default() -> Self {
        Self::Only(IMAGE_EXTENSIONS.iter().map(|e| e.to_string()).collect())
    }
}

impl Extensions {
    /// Whether `path` is listed.
    pub fn matches(&self, path: &Path) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => path.extension().is_some_and(|e| list.iter().any(|x| x.eq_ignore_ascii_case(e))),
        }
    }
}

impl FromStr for Extensions {
    type Err = String;

    /// `*`, or a comma-separated list (`jpg, .PNG`: dots and case do not matter).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self::All);
        }
        let list: Vec<String> = s.split(',').map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase()).collect();
        if let Some(bad) = list.iter().find(|e| e.is_empty() || e.contains(['/', '*', '.'])) {
            return Err(format!("`{bad}` is not a file extension (write e.g. `jpg,png`, or `*` for every object)"));
        }
        Ok(Self::Only(list))
    }
}

impl fmt::Display for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(list) => f.write_str(&list.join(",")),
        }
    }
}

impl ImageLocation {
    /// Parses a URL (`scheme://...`) or a local path (absolute, or relative to the working
    /// directory). Does no I/O.
    pub fn parse(location: &str) -> Result<Self> {
        let bad = |message: String| Error::Location { location: location.to_string(), message };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(bad("empty location".into()));
        }
        let has_scheme = trimmed.find("://").is_some_and(|i| i > 1 && trimmed[..i].chars().all(|c| c.is_ascii_alphanumeric() || c == '+'));
        // Split off the part with glob characters before URL parsing (`?` would start a query).
        let (literal, pattern) = split_glob(trimmed, has_scheme);
        let (store_url, prefix) = if has_scheme {
            let url = Url::parse(literal).map_err(|e| bad(e.to_string()))?;
            match url.scheme() {
                "file" | "memory" | "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" | "http" | "https" => {}
                other => return Err(bad(format!("unsupported scheme `{other}`; expected file, s3, gs, az, http(s) or memory"))),
            }
            if matches!(url.scheme(), "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl") && url.host_str().is_none_or(str::is_empty) {
                return Err(bad("missing bucket or container name".into()));
            }
            let mut store_url = url.clone();
            store_url.set_path("/");
            store_url.set_query(None);
            store_url.set_fragment(None);
            let prefix = Path::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
            (store_url, prefix)
        } else {
            let path = std::path::Path::new(literal);
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir().map_err(|e| bad(format!("no working directory: {e}")))?.join(path)
            };
            let prefix = Path::from_absolute_path(&absolute).map_err(|e| bad(e.to_string()))?;
            (Url::parse("file:///").map_err(|e| bad(e.to_string()))?, prefix)
        };
        let glob = match pattern {
            None => None,
            Some(rest) => {
                let full = if prefix.as_ref().is_empty() { rest.to_string() } else { format!("{prefix}/{rest}") };
                let glob = GlobBuilder::new(&full).literal_separator(true).build().map_err(|e| bad(format!("invalid glob: {e}")))?;
                Some(glob.compile_matcher())
            }
        };
        Ok(Self { original: trimmed.to_string(), store_url, prefix, glob, extensions: Extensions::default() })
    }

    /// The location listing `extensions` under a directory or prefix (a glob lists what it
    /// matches, whatever the extension).
    pub fn with_extensions(mut self, extensions: Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// What a directory or prefix lists.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The location as the user wrote it.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The store's root URL (`s3://bucket/`, `file:///`, `memory:///`), the key under which a
    /// store is registered.
    pub fn store_url(&self) -> &Url {
        &self.store_url
    }

    /// The listing prefix inside the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Whether an object path is listed: what the glob matches, or, under a directory or prefix
    /// without one, the [`Extensions`] (image files by default), so a lake's `labels.csv` or
    /// README does not become a failed row. A glob lists everything it matches (`dir/**` for all).
    pub fn matches(&self, path: &Path) -> bool {
        match &self.glob {
            Some(g) => g.is_match(path.as_ref()),
            None => self.extensions.matches(path),
        }
    }

    /// Whether the location has a glob.
    pub fn has_glob(&self) -> bool {
        self.glob.is_some()
    }

    /// For a local location (a path or `file://`), an error naming it when its directory or
    /// file (the part before any glob) does not exist: a typo would otherwise list nothing and
    /// label nothing. Other stores are not checked here (an empty prefix can be legitimate).
    pub fn check_exists(&self) -> Result<()> {
        if self.store_url.scheme() != "file" {
            return Ok(());
        }
        let path = std::path::PathBuf::from(format!("/{}", self.prefix));
        if path.exists() {
            return Ok(());
        }
        Err(Error::Location { location: self.original.clone(), message: format!("{} does not exist", path.display()) })
    }

    /// The full URL of an object in this location's store.
    pub fn object_url(&self, path: &Path) -> String {
        format!("{}{}", self.store_url, path)
    }
}

/// Splits `dir/sub/*.jpg` into (`dir/sub`, `*.jpg`) at the last separator before the first glob
/// character; locations without glob characters come back whole.
fn split_glob(location: &str, has_scheme: bool) -> (&str, Option<&str>) {
    let start = if has_scheme { location.find("://").map(|i| i + 3).unwrap_or(0) } else { 0 };
    let Some(first) = location[start..].find(GLOB_CHARS).map(|i| i + start) else {
        return (location, None);
    };
    match location[..first].rfind('/') {
        Some(slash) if slash >= start => (&location[..slash], Some(&location[slash + 1..])),
        _ if has_scheme => (location, None),
        _ => (".", Some(location)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_list_images_and_globs_list_what_they_match() {
        let dir = ImageLocation::parse("memory:///lake").unwrap();
        for (name, listed) in [("lake/a.png", true), ("lake/b.JPG", true), ("lake/c.TiFF", true), ("lake/labels.csv", false), ("lake/README", false)] {
            assert_eq!(dir.matches(&Path::from(name)), listed, "{name}");
        }
        let all = ImageLocation::parse("memory:///lake/**").unwrap();
        assert!(all.matches(&Path::from("lake/labels.csv")));
        let csv = dir.clone().with_extensions(".CSV, txt".parse().unwrap());
        assert!(csv.matches(&Path::from("lake/labels.csv")) && !csv.matches(&Path::from("lake/a.png")));
        let every = dir.with_extensions("*".parse().unwrap());
        assert!(every.matches(&Path::from("lake/README")));
        assert_eq!(Extensions::default().to_string(), IMAGE_EXTENSIONS.join(","));
        assert_eq!("*".parse::<Extensions>().unwrap().to_string(), "*");
        for bad in ["", "jpg,,png", "*.jpg", "a/b"] {
            assert!(bad.parse::<Extensions>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_local_location_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        for ok in [dir.path().display().to_string(), format!("{}/*.png", dir.path().display()), format!("{}/a.png", dir.path().display())] {
            ImageLocation::parse(&ok).unwrap().check_exists().unwrap();
        }
        let missing = format!("{}/nope/*.png", dir.path().display());
        let err = ImageLocation::parse(&missing).unwrap().check_exists().unwrap_err().to_string();
        assert_eq!(err, format!("invalid location `{missing}`: {}/nope does not exist", dir.path().display()));
        // Object stores are not checked here.
        ImageLocation::parse("s3://bucket/none/").unwrap().check_exists().unwrap();
    }

    #[test]
    fn parses_urls_paths_and_globs() {
        let cases = [
            ("s3://bucket/photos/", "s3://bucket/", "photos", None),
            ("s3://bucket/photos/**/*.jpg", "s3://bucket/", "photos", Some(("photos/a/b.jpg", "photos/a.png"))),
            ("gs://b/x/*.png", "gs://b/", "x", Some(("x/1.png", "x/y/1.png"))),
            ("memory:///imgs", "memory:///", "imgs", None),
            ("/data/lake/*.jp?", "file:///", "data/lake", Some(("data/lake/a.jpg", "data/lake/a.png"))),
            ("https://example.com/a/b.jpg", "https://example.com/", "a/b.jpg", None),
        ];
        for (input, store, prefix, glob) in cases {
            let loc = ImageLocation::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(loc.store_url().as_str(), store, "{input}");
            assert_eq!(loc.prefix().as_ref(), prefix, "{input}");
            assert_eq!(loc.has_glob(), glob.is_some(), "{input}");
            if let Some((yes, no)) = glob {
                assert!(loc.matches(&Path::from(yes)), "{input} should match {yes}");
                assert!(!loc.matches(&Path::from(no)), "{input} should not match {no}");
            }
        }
        assert_eq!(ImageLocation::parse("s3://bucket/a/b.jpg").unwrap().object_url(&Path::from("a/b.jpg")), "s3://bucket/a/b.jpg");
    }

    #[test]
    fn rejects_bad_locations() {
        for (input, needle) in [("", "empty"), ("ftp://x/y", "unsupported scheme `ftp`"), ("s3:///nobucket", "bucket"), ("/a/[z", "glob")] {
            let err = ImageLocation::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }
}
