//! The dashboard in a real headless Chromium (from the system's packages):
//! the page loads with no console error, lists every worker, and after
//! `crash/master` shows the new master and the election within seconds.
//! A screenshot of it is kept under `target/test-artifacts/`.
//!
//! Skipped when no Chromium is installed, unless `DBAAS_REQUIRE_SERVICES=1`
//! (set by `scripts/test`, which installs it), where that is a failure.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::inproc::Stack;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// How long the page may take to show what the cluster did.
const PATIENCE: Duration = Duration::from_secs(20);

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|p| p.is_file())
}

fn browser() -> Option<Browser> {
    let Some(path) = chromium() else {
        assert!(
            std::env::var("DBAAS_REQUIRE_SERVICES").is_err(),
            "no Chromium on PATH, and DBAAS_REQUIRE_SERVICES is set"
        );
        eprintln!("skipped: no Chromium on PATH");
        return None;
    };
    let options = LaunchOptions::default_builder()
        .path(Some(path))
        .sandbox(false)
        .headless(true)
        .window_size(Some((1280, 1000)))
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .expect("launch options");
    Some(Browser::new(options).expect("Chromium starts"))
}

/// Evaluates `js` in the page; its value as JSON.
fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    tab.evaluate(js, false)
        .expect("the script runs")
        .value
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `js` in the page until `ok` holds of its value.
fn wait_for(tab: &Tab, js: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = eval(tab, js);
        if ok(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the page shows {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster(orchestrator: &str) -> serde_json::Value {
    let body = ureq_get(&format!("{orchestrator}/api/v1/cluster"));
    serde_json::from_str(&body).expect("the cluster view is JSON")
}

/// A blocking GET through a throwaway runtime.
fn ureq_get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async { reqwest::get(url).await?.error_for_status()?.text().await })
        .expect("the orchestrator answers")
}

fn post(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let res = reqwest::Client::new().post(url).send().await?;
        let status = res.status().as_u16();
        Ok::<_, reqwest::Error>((status, res.text().await?))
    })
    .expect("the orchestrator answers")
}

fn artifact(name: &str, png: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("test-artifacts"))
        .unwrap_or_else(|| PathBuf::from("test-artifacts"));
    std::fs::create_dir_all(&dir).expect("the artifacts' directory");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_shows_the_workers_and_a_failover_live() {
    let Some(browser) = browser() else { return };
    let stack = Stack::start(64 * 1024);
    let url = &stack.urls.orchestrator;
    let before = cluster(url);
    let workers = before["workers"].as_array().map_or(0, Vec::len);
    let old_master = before["master"].as_u64().expect("a master leads");
    assert!(workers >= 2, "{before}");

    let tab = browser.new_tab().expect("a tab");
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = problems.clone();
    tab.enable_log().expect("the log domain");
    tab.enable_runtime().expect("the runtime domain");
    tab.add_event_listener(Arc::new(move |event: &Event| {
        let problem = match event {
            Event::RuntimeExceptionThrown(e) => Some(format!("{:?}", e.params.exception_details)),
            Event::RuntimeConsoleAPICalled(e)
                if matches!(
                    e.params.Type,
                    headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption::Error
                        | headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption::Assert
                ) =>
            {
                Some(format!("console: {:?}", e.params.args))
            }
            Event::LogEntryAdded(e)
                if matches!(
                    e.params.entry.level,
                    headless_chrome::protocol::cdp::Log::LogEntryLevel::Error
                ) =>
            {
                Some(format!("log: {} {:?}", e.params.entry.text, e.params.entry.url))
            }
            _ => None,
        };
        if let Some(p) = problem {
            seen.lock().unwrap().push(p);
        }
    }))
    .expect("a listener");
    // The listener hears a console error (so that hearing none below
    // means something).
    eval(&tab, "console.error('probe')");
    let deadline = Instant::now() + PATIENCE;
    while problems.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "a console error goes unheard");
        std::thread::sleep(Duration::from_millis(20));
    }
    problems.lock().unwrap().clear();

    tab.navigate_to(&format!("{url}/"))
        .expect("the page opens")
        .wait_until_navigated()
        .expect("the page loads");

    // Every worker listed, the master first, and the connection live.
    wait_for(
        &tab,
        "document.querySelectorAll('#workers tr').length",
        "every worker listed",
        |v| v.as_u64() == Some(workers as u64),
    );
    wait_for(
        &tab,
        "document.getElementById('conn').textContent",
        "live",
        |v| v == "live",
    );
    let master_text = eval(&tab, "document.getElementById('master').textContent");
    assert_eq!(master_text, old_master.to_string());

    // Crash the master: the page shows a new one and its election.
    let (status, body) = post(&format!("{url}/api/v1/crash/master"));
    assert_eq!(status, 200, "{body}");
    wait_for(
        &tab,
        "document.getElementById('master').textContent",
        "a new master",
        |v| {
            v.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|pid| pid != old_master)
        },
    );
    let new_master = eval(&tab, "document.getElementById('master').textContent");
    wait_for(
        &tab,
        "[...document.querySelectorAll('#events li')].map(li => li.textContent).join('\\n')",
        "the election of the new master",
        |v| {
            v.as_str().is_some_and(|s| {
                s.lines().any(|l| {
                    l.contains("election")
                        && l.contains(&format!("pid {}", new_master.as_str().unwrap_or("?")))
                })
            })
        },
    );
    wait_for(
        &tab,
        "document.querySelector('#workers tr td:nth-child(3)').textContent",
        "the new master first in the table",
        |v| v == "master",
    );

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    artifact("dashboard.png", &png);

    // Fifty workers: the table scrolls within its section, the page does
    // not grow sideways, and the rest stays in view.
    let fifty = r#"JSON.stringify((() => {
        const v = JSON.parse(JSON.stringify(window.__last || {}));
        v.workers = Array.from({length: 50}, (_, i) => ({pid: 5000 + i, id: i + 1,
            role: i ? "slave" : "master", state: i ? "serving" : "leading",
            applied: 123456789, lag: i, epoch: 7, session: i, reads_served: 98765432}));
        v.master = 5000;
        render(v);
        const section = document.getElementById('workers').closest('section');
        return {rows: document.querySelectorAll('#workers tr').length,
                sideways: document.documentElement.scrollWidth > window.innerWidth + 1,
                tall: section.getBoundingClientRect().height > window.innerHeight};
    })())"#;
    let got: serde_json::Value =
        serde_json::from_str(eval(&tab, fifty).as_str().expect("a JSON string")).expect("JSON");
    assert_eq!(got["rows"], 50, "{got}");
    assert_eq!(got["sideways"], false, "{got}");
    assert_eq!(got["tall"], false, "{got}");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    artifact("dashboard-50-workers.png", &png);

    // A narrow screen keeps every part on the page.
    tab.set_bounds(headless_chrome::types::Bounds::Normal {
        left: None,
        top: None,
        width: Some(390.0),
        height: Some(1400.0),
    })
    .expect("a narrow window");
    wait_for(
        &tab,
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        "no sideways scrolling on a narrow screen",
        |v| v == true,
    );
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    artifact("dashboard-narrow.png", &png);

    let problems = problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
}

#[test]
fn the_page_is_self_contained() {
    let stack = Stack::start(64 * 1024);
    let page = ureq_get(&format!("{}/", stack.urls.orchestrator));
    assert!(page.starts_with("<!doctype html>"));
    for outside in ["http://", "https://", "//cdn", "src=\""] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }
}
