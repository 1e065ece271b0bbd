//! The status page (`/` on the metrics address) of a node of a 3-node network, rendered by
//! headless Chromium (Debian's `chromium` package; `.ci/run` installs it): its script reads
//! `/status.json` and shows the peers, trees, clients, rates and drops. The test saves a
//! screenshot (`status-page.png` in Cargo's test temp dir; the README shows one).

use super::common;

use common::{get, metrics_addr, network_with};
use iris_proto::relay::ClientPacket;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// The page is the driver's common code: one runtime checks it.
runtime_independent!(the_status_page_shows_a_three_node_network);

/// The headless browser, if one is installed; CI (`IRIS_REQUIRE_CHROMIUM=1`) insists.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("IRIS_REQUIRE_CHROMIUM").is_none(),
            "IRIS_REQUIRE_CHROMIUM is set and no chromium is installed (apt-get install chromium)"
        );
        eprintln!("no chromium installed: the status page is checked without a browser");
    }
    found
}

/// Runs headless `browser` on `url`, letting the page's script run for `ms` of virtual time.
fn headless(browser: &str, url: &str, ms: u32, what: &[&str]) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!("iris-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,820",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={ms}"),
        ])
        .args(what)
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    out
}

fn the_status_page_shows_a_three_node_network() {
    let nodes = network_with(
        "status page",
        3,
        "23411,23412,23413",
        &["--metrics", "127.0.0.1:0"],
    );
    let addrs: Vec<String> = nodes.iter().map(metrics_addr).collect();
    // Traffic while the page is looked at: a member on node 0, a subscriber on node 1,
    // broadcasts and publishes from node 2.
    let _member = nodes[0].connect("svc");
    let mut subscriber = nodes[1].connect("");
    subscriber.send(ClientPacket::Subscribe {
        topic: "news".into(),
    });
    let mut sender = nodes[2].connect("");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sender.send(ClientPacket::Broadcast {
                    cluster: "svc".into(),
                    message: "status page".into(),
                });
                sender.send(ClientPacket::Publish {
                    topic: "news".into(),
                    event: "status page".into(),
                });
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // What the page reads: every node lists the two others, linked.
    let status = |i: usize| -> serde_json::Value {
        serde_json::from_str(&get(&addrs[i], "/status.json").1).unwrap()
    };
    let ids: Vec<String> = (0..3)
        .map(|i| status(i)["id"].as_str().unwrap().to_string())
        .collect();
    let peers = status(2)["peers"].as_array().unwrap().clone();
    let mut listed: Vec<&str> = peers.iter().map(|p| p["id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut want = vec![ids[0].as_str(), ids[1].as_str()];
    want.sort_unstable();
    assert_eq!(listed, want);
    assert!(
        peers
            .iter()
            .all(|p| p["linked"] == true && p["role"] == "leaf"),
        "{peers:?}"
    );
    let (head, page) = get(&addrs[2], "/");
    assert_eq!(head, "HTTP/1.1 200 OK");
    assert!(page.contains("<title>Iris node</title>") && page.contains("/status.json"));

    if let Some(browser) = chromium() {
        let url = format!("http://{}/", addrs[2]);
        // The page as the browser built it after its script ran a few times.
        let dom = headless(browser, &url, 4000, &["--dump-dom"]);
        let dom = String::from_utf8_lossy(&dom.stdout);
        let samples: u32 = dom
            .split("data-samples=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the script never rendered:\n{dom}"));
        assert!(samples >= 2, "{samples} readings:\n{dom}");
        assert!(dom.contains(&ids[2][..8]), "own id missing:\n{dom}");
        for peer in &ids[..2] {
            assert!(
                dom.contains(&format!("title=\"{peer}\">{}</td>", &peer[..8])),
                "peer {peer} missing:\n{dom}"
            );
        }
        for shown in [
            "ready",
            "converged",
            "broadcasts from clients",
            "Drops by reason",
            ">leaf<",
            ">up<",
        ] {
            assert!(dom.contains(shown), "{shown:?} missing:\n{dom}");
        }
        // And what it looks like.
        let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let _ = std::fs::remove_file(&png);
        let shot = headless(
            browser,
            &url,
            4000,
            &[&format!("--screenshot={}", png.display())],
        );
        let image = std::fs::read(&png).unwrap_or_else(|e| {
            panic!(
                "no screenshot ({e}): {}",
                String::from_utf8_lossy(&shot.stderr)
            )
        });
        assert!(image.starts_with(b"\x89PNG\r\n\x1a\n") && image.len() > 10_000);
        eprintln!("status page screenshot: {}", png.display());
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}
