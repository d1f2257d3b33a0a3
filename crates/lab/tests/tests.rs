//! Rendering a fixed run: the summary is pinned by a golden file, the plots must be valid SVG
//! with every server and front, readable text and the model's limit, and the page must load
//! in a real browser with every plot.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn golden() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

fn render_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["raw.csv", "machine.json"] {
        std::fs::copy(golden().join(f), dir.path().join(f)).unwrap();
    }
    c10k_lab::render::render_dir(dir.path()).unwrap();
    dir
}

#[test]
fn summary_matches_golden() {
    let dir = render_copy();
    let got = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    let want_path = golden().join("summary.md");
    if std::env::var_os("C10K_BLESS").is_some() {
        std::fs::write(&want_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&want_path).unwrap();
    assert_eq!(
        got, want,
        "rerun with C10K_BLESS=1 to accept a deliberate change"
    );
}

#[test]
fn plots_are_valid_svg_with_every_server_and_front() {
    let dir = render_copy();
    let rows = c10k_lab::record::read_csv(&dir.path().join("raw.csv")).unwrap();
    let mut servers: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
    servers.dedup();
    for name in ["throughput-delay-0-05.svg", "latency-delay-0-05.svg"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let svg = doc.root_element();
        assert_eq!(svg.tag_name().name(), "svg");
        // Shown at its own size in index.html's column, so font sizes are the page's.
        let width: f64 = svg.attribute("width").unwrap().parse().unwrap();
        assert!(
            width <= 1068.0,
            "{name}: {width} px is scaled down on the page"
        );
        let texts: Vec<roxmltree::Node> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .collect();
        let labels: Vec<&str> = texts
            .iter()
            .filter_map(|n| n.text().map(str::trim))
            .collect();
        for want in servers.iter().copied().chain(["direct", "behind nginx"]) {
            assert!(labels.contains(&want), "{name}: no legend entry for {want}");
        }
        for t in &texts {
            let size: f64 = t
                .attribute("font-size")
                .and_then(|s| s.trim_end_matches("px").parse().ok())
                .unwrap_or(0.0);
            assert!(size >= 11.0, "{name}: {size} px text {:?}", t.text());
        }
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert!(lines >= servers.len(), "{name}: {lines} lines");
    }
    // One panel: every centred label (concurrency ticks, axis name) is drawn once.
    let text = std::fs::read_to_string(dir.path().join("throughput-delay-0-05.svg")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut centred: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("text-anchor") == Some("middle"))
        .filter_map(|n| n.text().map(str::trim))
        .collect();
    assert!(centred.contains(&"20"), "a tick at each level: {centred:?}");
    let n = centred.len();
    centred.sort_unstable();
    centred.dedup();
    assert_eq!(n, centred.len(), "a label drawn twice: {centred:?}");
    // The model's limit is drawn (dashed: many short segments) and named in the legend.
    assert!(text.contains("limit of the model"), "no limit legend");
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("throughput-delay-0-05.svg") && html.contains("latency-delay-0-05.svg"));
}

/// With a single concurrency level the plots are grouped bars (one per front) with the figure
/// written at each bar, not a column of dots.
#[test]
fn single_level_runs_get_grouped_bars() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<_> = c10k_lab::record::read_csv(&golden().join("raw.csv"))
        .unwrap()
        .into_iter()
        .filter(|r| r.concurrency == 20)
        .collect();
    // A third front: nginx speaking the uwsgi protocol.
    let uwsgi: Vec<_> = rows
        .iter()
        .filter(|r| r.front == "nginx")
        .map(|r| c10k_lab::record::Row {
            front: "nginx-uwsgi".into(),
            mode: format!("nginx + uwsgi protocol + {}", r.server),
            ..r.clone()
        })
        .collect();
    rows.extend(uwsgi);
    let info = machine();
    c10k_lab::render::render(dir.path(), &rows, &info).unwrap();
    let text = std::fs::read_to_string(dir.path().join("throughput-delay-0-05.svg")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::trim))
        .collect();
    let count = |want: &str| labels.iter().filter(|l| **l == want).count();
    assert!(
        labels
            .iter()
            .any(|l| l.contains("at 20 concurrent clients")),
        "{labels:?}"
    );
    // Each bar is labelled with its transaction rate: 20 (sync) and 360 (async), 3 fronts.
    assert_eq!(count("360"), 3, "{labels:?}");
    assert_eq!(count("20.0"), 3, "{labels:?}");
    assert_eq!(count("behind nginx, uwsgi protocol"), 1, "{labels:?}");
    let bars = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert!(bars >= 2 * 6, "{bars} rectangles for 2 servers × 3 fronts");
}

fn machine() -> c10k_lab::render::RunInfo {
    serde_json::from_str(&std::fs::read_to_string(golden().join("machine.json")).unwrap()).unwrap()
}

/// The page as a reader sees it: headless Chromium loads index.html (line plots and, for a
/// second workload measured at one level, bar plots), every plot loads, the console stays
/// quiet, and a screenshot is not blank. Skipped with a line when Chromium is not installed,
/// unless C10K_REQUIRE_BROWSER is set (.ci/run sets it and installs Chromium).
#[test]
fn page_renders_in_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("C10K_REQUIRE_BROWSER").is_none(),
            "C10K_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rows = c10k_lab::record::read_csv(&golden().join("raw.csv")).unwrap();
    let single: Vec<_> = rows
        .iter()
        .filter(|r| r.concurrency == 20)
        .map(|r| c10k_lab::record::Row {
            workload: "hello".into(),
            model_limit: 0.0,
            ..r.clone()
        })
        .collect();
    rows.extend(single);
    c10k_lab::render::render(dir.path(), &rows, &machine()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    let plots = html.matches("<img ").count();
    assert_eq!(plots, 4, "{html}");
    // The page plus a check that runs once everything has loaded: it counts the plots that
    // decoded and logs each one that did not (Chromium prints console messages on stderr).
    let check = html.replace(
        "</body>",
        "<script>window.addEventListener('load', () => {\
           const imgs = [...document.images];\
           const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));\
           document.body.setAttribute('data-plots', (imgs.length - bad.length) + '/' + imgs.length);\
           bad.forEach(i => console.error('plot did not load: ' + i.src));\
         });</script></body>",
    );
    let page = dir.path().join("check.html");
    std::fs::write(&page, check).unwrap();
    let url = format!("file://{}", page.display());
    let dom = run_chromium(
        chromium,
        &[
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url,
        ],
    );
    let out = String::from_utf8_lossy(&dom.stdout);
    let err = String::from_utf8_lossy(&dom.stderr);
    assert!(
        out.contains(&format!("data-plots=\"{plots}/{plots}\"")),
        "not every plot loaded: {}\n{err}",
        out.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body>")
    );
    let console: Vec<&str> = err.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // A screenshot of the page, and one of an empty page of the same size: the plots and
    // tables make the page's image several times larger than a blank one.
    let shot = dir.path().join("page.png");
    let blank = dir.path().join("blank.png");
    std::fs::write(
        dir.path().join("blank.html"),
        "<!doctype html><html><body></body></html>",
    )
    .unwrap();
    for (png, html) in [(&shot, "index.html"), (&blank, "blank.html")] {
        run_chromium(
            chromium,
            &[
                "--hide-scrollbars",
                "--window-size=1200,2400",
                &format!("--screenshot={}", png.display()),
                &format!("file://{}", dir.path().join(html).display()),
            ],
        );
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let head = std::fs::read(&shot).unwrap_or_default();
    assert!(head.starts_with(b"\x89PNG"), "no screenshot written");
    assert!(
        size(&shot) > 3 * size(&blank),
        "the screenshot looks blank: {} bytes, an empty page {}",
        size(&shot),
        size(&blank)
    );
}

/// Runs headless Chromium with `args`, killed after 90 s.
fn run_chromium(chromium: &str, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("chromium output")
}

#[test]
fn render_refuses_a_broken_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raw.csv"), "mode,nonsense\nx,y\n").unwrap();
    std::fs::copy(
        golden().join("machine.json"),
        dir.path().join("machine.json"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        c10k_lab::render::render_dir(dir.path()).unwrap_err()
    );
    assert!(err.contains("raw.csv"), "{err}");
}
