//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! `fantoccini`). Log in; a job submitted over REST appears live without a reload (and a
//! ticked row stays ticked); retry from the job page changes its status; a queue paused
//! from the queues page holds its jobs until resumed; `/docs` renders and loads
//! `/openapi.json`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Without them the test fails under `CI=true` and skips with a message elsewhere. A
//! failing run saves the page as `target/browser-failure.png`. A passing run writes the
//! README's screenshots, `docs/console-overview.png` and `docs/console-job.png`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use jobstream_testkit::{Backend, workspace_root};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, WAIT};

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How long the browser may take for one step.
const STEP: Duration = Duration::from_secs(30);

/// chromedriver on a port it chose; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The browser's binaries, or why there are none.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str, env: &str| {
        std::env::var_os(env)
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .find(|f| f.is_file())
                })
            })
            .ok_or_else(|| format!("{name} not found (set {env} or install it)"))
    };
    Ok((
        find("chromium", "CHROMIUM_BIN")?,
        find("chromedriver", "CHROMEDRIVER_BIN")?,
    ))
}

async fn start_driver(chromedriver: &PathBuf) -> Driver {
    let mut child = Command::new(chromedriver)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.expect("chromedriver output") {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().to_owned();
            }
        }
        panic!("chromedriver ended without saying its port");
    })
    .await
    .expect("chromedriver started");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver, chromium: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let (chromium, chromedriver) = match binaries() {
        Ok(b) => b,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the browser is missing: {why}")
        }
        Err(why) => {
            eprintln!("browser test skipped: {why} (apt-get install chromium chromium-driver)");
            return;
        }
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let driver = start_driver(&chromedriver).await;
    let client = browser(&driver, &chromium).await;
    let outcome = flow(&app, &client).await;
    if let Err(e) = &outcome {
        let shot = workspace_root().join("target/browser-failure.png");
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        let _ = client.clone().close().await;
        panic!("browser flow failed: {e} (screenshot: {})", shot.display());
    }
    client.close().await.expect("close the browser");
}

/// Waits until the page's live connection (htmx SSE extension) is open, so that a change
/// made now is announced to it.
async fn live_connection_open(client: &Client) -> Result<(), Failure> {
    let script = "const e = document.querySelector('[sse-connect]'); \
        const d = e && e['htmx-internal-data']; \
        return !!(d && d.sseEventSource && d.sseEventSource.readyState === 1);";
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if client.execute(script, vec![]).await? == json!(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the page's live connection did not open".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in with `token` through the login form.
async fn login(client: &Client, app: &TestApp, token: &str) -> Result<(), Failure> {
    client.goto(&format!("{}/ui/login", app.base)).await?;
    client
        .find(Locator::Id("token"))
        .await?
        .send_keys(token)
        .await?;
    client
        .find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#overview"))
        .await?;
    Ok(())
}

async fn status_text(client: &Client) -> Result<String, Failure> {
    Ok(client.find(Locator::Id("job-status")).await?.text().await?)
}

async fn flow(app: &TestApp, client: &Client) -> Result<(), Failure> {
    let user = app.token("alice", false);
    // Some history for the overview.
    for i in 0..6 {
        app.submit_job(&user, &json!({"kind": "echo", "payload": {"n": i}}))
            .await;
    }
    let failed = app
        .submit_job(
            &user,
            &json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 2}),
        )
        .await
        .id
        .to_string();
    app.wait_for_row(&failed, "failed", |r| r.status == "failed")
        .await;

    // 1. Log in.
    login(client, app, &user).await?;

    // 2. A job submitted over REST appears in the open jobs page, without a reload.
    client.goto(&format!("{}/ui/jobs", app.base)).await?;
    live_connection_open(client).await?;
    let marker: String = client
        .execute("window.notReloaded = 1; return 'ok';", vec![])
        .await?
        .to_string();
    assert_eq!(marker, "\"ok\"");
    let fresh = app
        .submit_job(&user, &json!({"kind": "echo", "payload": {"live": true}}))
        .await
        .id
        .to_string();
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(&format!("tr[data-id='{fresh}']")))
        .await?;
    let same_page = client
        .execute("return window.notReloaded === 1;", vec![])
        .await?;
    if same_page != json!(true) {
        return Err("the page was reloaded".into());
    }
    // A ticked row stays ticked while live updates redraw the table.
    let tick = format!("tr[data-id='{fresh}'] input[type=checkbox]");
    client.find(Locator::Css(&tick)).await?.click().await?;
    let another = app
        .submit_job(&user, &json!({"kind": "echo", "payload": {"live": 2}}))
        .await
        .id
        .to_string();
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(&format!("tr[data-id='{another}']")))
        .await?;
    let ticked = client
        .execute(
            "return document.querySelector(arguments[0]).checked;",
            vec![json!(tick)],
        )
        .await?;
    if ticked != json!(true) {
        return Err("a live update unticked the selected job".into());
    }

    // The README's overview screenshot.
    client.goto(&format!("{}/ui", app.base)).await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("svg.chart"))
        .await?;
    std::fs::write(
        workspace_root().join("docs/console-overview.png"),
        client.screenshot().await?,
    )?;

    // 3. Retry from the job page: its status changes, live.
    client
        .goto(&format!("{}/ui/jobs/{failed}", app.base))
        .await?;
    // Tall enough for the whole timeline.
    client.set_window_size(1280, 1300).await?;
    std::fs::write(
        workspace_root().join("docs/console-job.png"),
        client.screenshot().await?,
    )?;
    client.set_window_size(1280, 900).await?;
    // A cancelled job, retried: it runs again (a sleep that outlasts the test).
    let sleeper = app
        .submit_job(&user, &json!({"kind": "sleep", "payload": {"ms": 120_000}}))
        .await
        .id
        .to_string();
    let cancel = app
        .http
        .post(format!("{}/v1/jobs/{sleeper}/cancel", app.base))
        .bearer_auth(&user)
        .send()
        .await?;
    if !cancel.status().is_success() {
        return Err(format!("cancel: {}", cancel.status()).into());
    }
    app.wait_for_row(&sleeper, "cancelled", |r| r.status == "cancelled")
        .await;
    client
        .goto(&format!("{}/ui/jobs/{sleeper}", app.base))
        .await?;
    if status_text(client).await? != "cancelled" {
        return Err("the job page does not show the cancelled status".into());
    }
    client.find(Locator::Id("retry")).await?.click().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // The retry redirects to the job page; the status then follows the job live.
        if let Ok(status) = status_text(client).await
            && (status == "queued" || status == "running")
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the status never left cancelled after the retry".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !client.source().await?.contains("retry_requested") {
        return Err("the timeline does not show the retry".into());
    }

    // 4. An admin pauses the queue from the console: a job submitted then waits (queued,
    // pending at NATS); resumed, it runs.
    let admin = app.token("ops", true);
    login(client, app, &admin).await?;
    client.goto(&format!("{}/ui/queues", app.base)).await?;
    client
        .find(Locator::Css("tr[data-queue='default'] button.pause"))
        .await?
        .click()
        .await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("tr[data-queue='default'] button.resume"))
        .await?;
    app.wait_for_queue(&admin, "default", "default paused", |q| q["paused"] == true)
        .await;
    let held = app
        .submit_job(&user, &json!({"kind": "echo", "payload": "held"}))
        .await
        .id
        .to_string();
    app.wait_for_queue(&admin, "default", "the held job pending at NATS", |q| {
        q["consumer"]["pending"] == 1 && q["depth"]["queued"] == 1
    })
    .await;
    if app.wait_for_row(&held, "held", |_| true).await.status != "queued" {
        return Err("a job of the paused queue ran".into());
    }
    client.refresh().await?;
    client
        .find(Locator::Css("tr[data-queue='default'] button.resume"))
        .await?
        .click()
        .await?;
    app.wait_for_row(&held, "the held job runs after resume", |r| {
        r.status == "succeeded"
    })
    .await;

    // 5. /docs renders and loads /openapi.json (its title comes from the document).
    client.goto(&format!("{}/docs/", app.base)).await?;
    let title = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(".swagger-ui .info .title"))
        .await?
        .text()
        .await?;
    if !title.contains("jobstream") {
        return Err(format!("docs title {title:?}").into());
    }
    Ok(())
}
