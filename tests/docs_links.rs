//! Every link between the README, docs/ and the repository's files lands: the file is there
//! and so is the anchor (a heading's GitHub slug, or an `<a id>`). Installers' bookmarks of
//! the README's old sections are kept by the `<a id>` pointers of its "Where things moved".

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file: its headings (outside code) and `<a id="...">`.
fn anchors(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if !fence && line.starts_with('#') {
            let h = line.trim_start_matches('#');
            if h.starts_with(' ') {
                out.insert(slug(h));
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("<a id=\"") {
            let tail = &rest[i + 7..];
            let end = tail.find('"').unwrap();
            out.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

/// The `](target)` links of a Markdown file, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_link_in_the_readme_and_docs_lands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    assert!(files.len() > 5, "docs/ has its pages");
    let mut broken = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                f.clone()
            } else {
                f.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", f.display()));
                continue;
            }
            if let Some(a) = anchor {
                let t = std::fs::read_to_string(&target).unwrap();
                if !anchors(&t).contains(a) {
                    broken.push(format!("{}: {link}: no such anchor", f.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The README's sections before docs/ existed: each old anchor is still in the README.
#[test]
fn the_readmes_old_anchors_still_land() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = anchors(&std::fs::read_to_string(root.join("README.md")).unwrap());
    for a in [
        "the-demo",
        "what-the-daemon-does",
        "commands",
        "before-the-doors-open",
        "config-reference",
        "opening-hours",
        "readers-serial-keyboard-mode-several",
        "gpio-backends-gpio-or-gpiod",
        "locked-when-not-running",
        "installing-on-a-raspberry-pi",
        "wiring-a-pi",
        "the-guest-screen",
        "monitoring-metrics-health-and-the-status-page",
        "tiketo-sim",
        "the-api-schema",
        "figures",
        "development",
    ] {
        assert!(readme.contains(a), "README lost #{a}");
    }
}
