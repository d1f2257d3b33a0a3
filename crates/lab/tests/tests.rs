//! Rendering a fixed run: the summary is pinned by a golden file, the plots must be valid SVG
//! with a line per mode, and the page must reference every plot.

use std::path::Path;

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
fn plots_are_valid_svg_with_every_mode() {
    let dir = render_copy();
    let rows = c10k_lab::record::read_csv(&dir.path().join("raw.csv")).unwrap();
    let modes = c10k_lab::render::modes(&rows);
    for name in ["throughput-delay-0-05.svg", "latency-delay-0-05.svg"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let labels: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::trim))
            .collect();
        for mode in &modes {
            assert!(
                labels.iter().any(|l| l == mode),
                "{name}: no legend entry for {mode}"
            );
        }
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert!(
            lines >= modes.len(),
            "{name}: {lines} lines for {} modes",
            modes.len()
        );
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("throughput-delay-0-05.svg") && html.contains("latency-delay-0-05.svg"));
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
