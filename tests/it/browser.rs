//! A page rendered by a real browser: headless Chromium (Debian `chromium`, installed by
//! `scripts/install-test-tools.sh`) loads it twice at the same width. The first load runs a
//! probe, injected into a copy of the page before anything else, that records what the page did:
//! console calls, uncaught errors, resources that failed to load or were fetched from anywhere
//! but a `data:` URI, and where each chart and image landed and whether the image decoded. The
//! second load takes a screenshot of the unmodified page, whose pixels are then checked inside
//! each element's box.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The page's width in CSS pixels for both loads (one device pixel each).
const WIDTH: u32 = 1280;
/// How long one browser run may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(90);

/// Records into `document.title` (which does not take part in layout) once the page loaded.
/// Capturing `error` events on `window` sees failed `<img>` loads, which do not bubble.
const PROBE: &str = r#"<script>
(() => {
  const problems = [];
  for (const level of ["error", "warn", "log", "info", "debug"]) {
    const original = console[level];
    console[level] = (...args) => { problems.push(`console.${level}: ${args.join(" ")}`); original.apply(console, args); };
  }
  window.addEventListener("error", (e) => {
    const target = e.target && e.target !== window ? `${e.target.tagName} ${e.target.src || e.target.href || ""}` : "";
    problems.push(`error: ${e.message || "resource failed to load"} ${target}`);
  }, true);
  window.addEventListener("load", () => {
    for (const r of performance.getEntriesByType("resource")) {
      if (!r.name.startsWith("data:")) problems.push(`fetched: ${r.name}`);
    }
    const box = (kind, el, decoded) => {
      const r = el.getBoundingClientRect();
      return { kind, x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height, decoded };
    };
    const elements = [
      ...[...document.querySelectorAll("figure.chart svg")].map((el) => box("chart", el, true)),
      ...[...document.images].map((el) => box("image", el, el.complete && el.naturalWidth > 0)),
    ];
    const height = Math.ceil(document.documentElement.scrollHeight);
    document.title = JSON.stringify({ problems, elements, height, svgs: document.querySelectorAll("svg").length });
  });
})();
</script>"#;

/// One element's box on the page, in CSS pixels from the page's top left corner.
#[derive(Debug, Deserialize)]
pub struct Element {
    /// `chart` (an SVG in a chart figure) or `image` (an `<img>`).
    pub kind: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The browser decoded the image (always true for a chart).
    pub decoded: bool,
}

/// What the probe recorded.
#[derive(Debug, Deserialize)]
pub struct Probe {
    /// Console calls, errors and non-inline fetches; empty for a page that is self-contained and
    /// quiet.
    pub problems: Vec<String>,
    pub elements: Vec<Element>,
    /// The page's full height in CSS pixels.
    pub height: u32,
    /// Every `<svg>` on the page, in a chart or not.
    pub svgs: usize,
}

/// A page as the browser showed it.
pub struct Rendered {
    pub probe: Probe,
    /// The whole page, `WIDTH` x `probe.height`.
    pub screenshot: image::RgbaImage,
}

impl Rendered {
    /// The elements whose box in the screenshot is blank: fewer than 1% of its pixels (and
    /// fewer than 20) differ from the box's most common colour, or the box is empty.
    pub fn blank_elements(&self) -> Vec<&Element> {
        self.probe.elements.iter().filter(|e| !self.drawn(e)).collect()
    }

    fn drawn(&self, e: &Element) -> bool {
        let (w, h) = self.screenshot.dimensions();
        let x0 = (e.x.max(0.0).floor() as u32).min(w);
        let y0 = (e.y.max(0.0).floor() as u32).min(h);
        let x1 = ((e.x + e.width).ceil() as u32).min(w);
        let y1 = ((e.y + e.height).ceil() as u32).min(h);
        if x1 <= x0 || y1 <= y0 {
            return false;
        }
        let mut counts = std::collections::HashMap::new();
        for y in y0..y1 {
            for x in x0..x1 {
                *counts.entry(self.screenshot.get_pixel(x, y).0).or_insert(0usize) += 1;
            }
        }
        let total = ((x1 - x0) * (y1 - y0)) as usize;
        let background = counts.values().copied().max().unwrap_or(0);
        let other = total - background;
        other >= 20 && other * 100 >= total
    }
}

/// The Chromium binary: `CLIPTTA_CHROMIUM`, else `chromium` on the PATH. `None` (the caller
/// skips) when it is missing and `CLIPTTA_REQUIRE_TEST_TOOLS` is unset; `scripts/test.sh` sets
/// it, so CI never skips.
pub fn chromium() -> anyhow::Result<Option<PathBuf>> {
    let candidate = std::env::var_os("CLIPTTA_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("chromium"));
    let found = Command::new(&candidate).arg("--version").stdin(Stdio::null()).output();
    match found {
        Ok(out) if out.status.success() => Ok(Some(candidate)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CLIPTTA_REQUIRE_TEST_TOOLS").is_none() => {
            eprintln!("\n*** SKIPPED: `chromium` is not installed, so the report is not rendered in a browser; scripts/install-test-tools.sh installs it ***\n");
            Ok(None)
        }
        Ok(out) => bail!("`{} --version` failed: {}", candidate.display(), String::from_utf8_lossy(&out.stderr)),
        Err(e) => bail!("cannot run `{}` (run scripts/install-test-tools.sh): {e}", candidate.display()),
    }
}

/// Loads `page` (a local HTML file) in `browser` and screenshots it.
pub fn render(browser: &Path, page: &Path) -> anyhow::Result<Rendered> {
    let scratch = tempfile::tempdir()?;
    let html = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    // The probe opens the head, so it sees everything the page does, and leaves the doctype
    // first (before it, the page would render in quirks mode, laid out differently). A copy
    // beside the page keeps relative references (there should be none) resolving as they would.
    let at = html.find("<head").and_then(|i| html[i..].find('>').map(|j| i + j + 1)).context("the page has no <head>")?;
    let probed = page.with_extension("probe.html");
    std::fs::write(&probed, format!("{}{PROBE}{}", &html[..at], &html[at..]))?;
    let dom = run(browser, scratch.path(), &["--dump-dom".to_string(), url(&probed)?], 1000)?;
    std::fs::remove_file(&probed)?;
    let title = dom.split_once("<title>").and_then(|(_, rest)| rest.split_once("</title>")).map(|(t, _)| t).context("the probe set no title")?;
    let json = title.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&");
    let probe: Probe = serde_json::from_str(&json).with_context(|| format!("the probe's record: {json}"))?;

    let shot = scratch.path().join("page.png");
    run(browser, scratch.path(), &[format!("--screenshot={}", shot.display()), url(page)?], probe.height)?;
    let screenshot = image::open(&shot).with_context(|| format!("the screenshot of {}", page.display()))?.to_rgba8();
    anyhow::ensure!(
        screenshot.dimensions() == (WIDTH, probe.height),
        "the screenshot is {:?}, not the page's {WIDTH}x{}",
        screenshot.dimensions(),
        probe.height
    );
    if let Some(keep) = std::env::var_os("CLIPTTA_KEEP_SCREENSHOTS") {
        let name = page.file_name().context("a page file name")?;
        std::fs::copy(&shot, Path::new(&keep).join(name).with_extension("png"))?;
    }
    Ok(Rendered { probe, screenshot })
}

fn url(path: &Path) -> anyhow::Result<String> {
    let absolute = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    Ok(format!("file://{}", absolute.display()))
}

/// Runs one headless load and returns its stdout.
fn run(browser: &Path, profile: &Path, args: &[String], height: u32) -> anyhow::Result<String> {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            "--virtual-time-budget=10000",
            // Paint only once every image has decoded (Chromium decodes off the main thread,
            // and a screenshot taken earlier shows empty boxes).
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--user-data-dir={}", profile.join("profile").display()))
        .arg(format!("--window-size={WIDTH},{height}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(profile.join("stderr.txt"))?)
        .spawn()
        .with_context(|| format!("starting {}", browser.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            bail!("{} did not finish within {TIMEOUT:?}", browser.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().map_err(|_| anyhow::anyhow!("reading the browser's output"))??;
    if !status.success() {
        let err = std::fs::read_to_string(profile.join("stderr.txt")).unwrap_or_default();
        bail!("{} exited with {status}: {err}", browser.display());
    }
    Ok(out)
}
