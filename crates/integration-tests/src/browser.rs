//! Reading a page back through a real browser (Debian's headless chromium): what someone who
//! opens `cmesh test`'s HTML report sees, not what its bytes look like. The report is loaded
//! in a frame of a small harness page whose script walks the frame's tables (text as laid out,
//! class, computed background, whether each link's target exists), counts the report's own
//! scripts and the resources it fetched, and writes the result into the harness, which
//! chromium's `--dump-dom` prints.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::tools;

/// The harness: `{report}` is the report's file name, in the same directory.
const HARNESS: &str = r#"<!DOCTYPE html>
<html><body>
<iframe id="f" src="{report}" style="width:1280px;height:900px"></iframe>
<script>
const f = document.getElementById('f');
f.addEventListener('load', () => {
  const d = f.contentDocument, w = f.contentWindow;
  const tables = {};
  for (const t of d.querySelectorAll('table')) {
    tables[t.id] = [...t.rows].map(r => [...r.cells].map(c => {
      const a = c.querySelector('a');
      const href = a ? a.getAttribute('href') : null;
      return {
        text: c.innerText.trim(),
        tag: c.tagName.toLowerCase(),
        class: c.className,
        background: w.getComputedStyle(c).backgroundColor,
        title: c.title,
        link: href === null ? null : (href.startsWith('#') && d.getElementById(href.slice(1)) ? 'found' : 'missing: ' + href),
      };
    }));
  }
  const out = {
    title: d.title,
    heading: d.querySelector('h1') ? d.querySelector('h1').innerText : null,
    tables,
    scripts: d.scripts.length,
    resources: w.performance.getEntriesByType('resource').map(e => e.name),
    text: d.body.innerText,
  };
  const pre = document.createElement('pre');
  pre.id = 'readback';
  pre.textContent = btoa(unescape(encodeURIComponent(JSON.stringify(out))));
  document.body.append(pre);
});
</script>
</body></html>
"#;

/// The chromium binary (`CMESH_CHROMIUM`, or `chromium` on PATH).
///
/// # Panics
/// When it is missing ([`tools::missing`]).
pub fn chromium() -> std::path::PathBuf {
    tools::find("chromium", "CMESH_CHROMIUM")
}

/// Runs headless chromium with `args` and a private profile under `dir`, killed after 90 s.
fn run_chromium(dir: &Path, args: &[String]) -> std::process::Output {
    let profile = dir.join(".chromium-profile");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("chromium output");
            panic!(
                "chromium did not finish within 90 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("chromium output");
    let _ = std::fs::remove_dir_all(profile);
    out
}

/// Opens `report` (an HTML file) in headless chromium and returns what the page shows: `title`,
/// `heading`, `tables` (by id: rows of cells with `text`, `tag`, `class`, `background`,
/// `title`, `link`), `scripts`, `resources` (URLs the page fetched) and `text` (the whole
/// page's text as laid out).
///
/// # Panics
/// When chromium is missing, fails, or the harness reports nothing.
pub fn read_back(report: &Path) -> serde_json::Value {
    let report = report.canonicalize().expect("report path");
    let dir = report.parent().expect("report directory");
    let name = report.file_name().and_then(|n| n.to_str()).expect("name");
    let harness = dir.join(".cmesh-readback.html");
    std::fs::write(&harness, HARNESS.replace("{report}", name)).expect("write harness");
    let out = run_chromium(
        dir,
        &[
            "--allow-file-access-from-files".into(),
            "--virtual-time-budget=15000".into(),
            "--dump-dom".into(),
            format!("file://{}", harness.display()),
        ],
    );
    let _ = std::fs::remove_file(&harness);
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"readback\">").unwrap_or_else(|| {
        panic!(
            "chromium showed no read-back ({}):\n{dom}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }) + "<pre id=\"readback\">".len();
    let end = start + dom[start..].find("</pre>").expect("end of read-back");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(dom[start..end].trim())
        .expect("read-back is base64");
    serde_json::from_slice(&bytes).expect("read-back is JSON")
}

/// Saves a `width`×`height` screenshot of `page` as PNG at `png` (for docs).
///
/// # Panics
/// When chromium is missing or fails.
pub fn screenshot(page: &Path, png: &Path, width: u32, height: u32) {
    let page = page.canonicalize().expect("page path");
    let dir = page.parent().expect("page directory");
    let out = run_chromium(
        dir,
        &[
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", png.display()),
            format!("file://{}", page.display()),
        ],
    );
    assert!(
        out.status.success() && png.is_file(),
        "chromium screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rows of table `id` as the texts of their cells.
///
/// # Panics
/// When the page has no such table.
pub fn table_texts(page: &serde_json::Value, id: &str) -> Vec<Vec<String>> {
    page["tables"][id]
        .as_array()
        .unwrap_or_else(|| panic!("no table `{id}` in the page: {page:#}"))
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|c| c["text"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

/// The background chromium computes for each outcome class of the report's style sheet.
fn background(outcome: &str) -> &'static str {
    match outcome {
        "pass" => "rgb(218, 251, 225)",
        "fail" => "rgb(255, 235, 233)",
        _ => "rgb(246, 248, 250)",
    }
}

/// Asserts that `page` (a [`read_back`] of `cmesh test`'s HTML report) shows what `report`
/// (the JSON of the same run) says: the verdict, every pod-to-pod cell in its place of the
/// matrix with its result and colour, each linked to its detail, one detail row per cell, the
/// cleanup, and nothing run or fetched.
///
/// # Panics
/// On the first difference.
pub fn assert_shows_test_report(page: &serde_json::Value, report: &serde_json::Value) {
    let ok = report["ok"].as_bool().expect("report.ok");
    let verdict = if ok { "passed" } else { "FAILED" };
    let run = report["runId"].as_str().expect("report.runId");
    assert_eq!(page["title"], format!("cmesh test {run} {verdict}"));
    assert_eq!(page["heading"], format!("cmesh test {verdict}"));
    assert_eq!(page["scripts"], 0, "the report runs nothing");
    assert_eq!(
        page["resources"],
        serde_json::json!([]),
        "the report fetches nothing"
    );
    let clusters: Vec<&str> = report["clusters"]
        .as_array()
        .expect("report.clusters")
        .iter()
        .map(|c| c.as_str().expect("cluster"))
        .collect();
    let cells = report["cells"].as_array().expect("report.cells");
    let matrix = &page["tables"]["pod-matrix"];
    let header = &table_texts(page, "pod-matrix")[0];
    assert_eq!(header[1..], clusters, "matrix columns");
    for (i, from) in clusters.iter().enumerate() {
        let row = &matrix[i + 1];
        assert_eq!(row[0]["text"], *from, "matrix row {i}");
        for (j, to) in clusters.iter().enumerate() {
            let shown = &row[j + 1];
            if from == to {
                assert_eq!(shown["class"], "self");
                continue;
            }
            let cell = cells
                .iter()
                .find(|c| c["check"] == "pod" && c["from"] == *from && c["to"] == *to)
                .unwrap_or_else(|| panic!("no pod cell {from}→{to} in {report:#}"));
            let outcome = cell["outcome"].as_str().expect("outcome");
            let short = cell["short"].as_str().expect("short");
            let text = shown["text"].as_str().expect("text");
            assert_eq!(shown["class"], outcome, "{from}→{to}: {shown}");
            match outcome {
                "pass" => assert_eq!(text, short, "{from}→{to}"),
                "fail" => assert!(
                    text.starts_with("FAIL") && text.ends_with(short.trim_start_matches("FAIL ")),
                    "{from}→{to}: shows {text:?} for {short:?}"
                ),
                _ => assert_eq!(text, "skip", "{from}→{to}"),
            }
            assert_eq!(
                shown["background"],
                background(outcome),
                "{from}→{to}: {shown}"
            );
            assert_eq!(shown["link"], "found", "{from}→{to}: {shown}");
            assert_eq!(shown["title"], cell["detail"], "{from}→{to}");
        }
    }
    // One row per cell in "Every cell", in the report's order, after the header.
    let every = table_texts(page, "cells");
    assert_eq!(every.len(), cells.len() + 1, "one detail row per cell");
    for (row, cell) in every[1..].iter().zip(cells) {
        assert_eq!(row[0], cell["check"].as_str().expect("check"));
        assert_eq!(row[1], cell["from"].as_str().expect("from"));
        assert_eq!(row[2], cell["to"].as_str().unwrap_or(""));
        assert_eq!(
            row[5],
            cell["detail"].as_str().expect("detail").trim(),
            "detail of {cell}"
        );
    }
    let cleanup = table_texts(page, "cleanup");
    let expected = report["cleanup"].as_array().expect("report.cleanup");
    assert_eq!(cleanup.len(), expected.len() + 1);
    for (row, c) in cleanup[1..].iter().zip(expected) {
        assert_eq!(row[0], c["cluster"].as_str().expect("cluster"));
        assert_eq!(row[1], c["namespace"].as_str().expect("namespace"));
    }
}
