//! The official Leonardo SDKs as clients. The Python SDK (pinned in `tests/sdk/requirements.txt`)
//! runs from a virtualenv that the test makes under `target/` on first use; the TypeScript SDK
//! (pinned in `tests/sdk/ts/package-lock.json`) runs on Node from a `node_modules` that `npm ci`
//! makes under `target/` on first use. Without Python or PyPI, Node or the npm registry, a test
//! says loudly that it was skipped, except under CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

/// Runs `command` to completion; its output if it succeeded.
fn run(command: &mut Command) -> Result<Output, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A Python interpreter with the packages pinned in `tests/<suite>/requirements.txt`, in a
/// virtualenv under `target/` made on first use.
pub fn python_with(suite: &str) -> Result<PathBuf, String> {
    let requirements_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(suite).join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path).map_err(|e| e.to_string())?;
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{suite}-venv"));
    std::fs::create_dir_all(venv.parent().unwrap()).map_err(|e| e.to_string())?;
    // Tests in other processes (cargo nextest) may provision at the same time.
    let lock = std::fs::File::create(venv.with_extension("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let python = venv.join("bin").join("python");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok() == Some(requirements.clone()) && python.exists() {
        return Ok(python);
    }
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&interpreter).args(["-m", "venv", "--clear"]).arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements_path))?;
    std::fs::write(&stamp, requirements).map_err(|e| e.to_string())?;
    Ok(python)
}

/// The interpreter for `suite`, or `None` after announcing the skip (a failure under CI).
pub fn python_or_skip(suite: &str, test: &str) -> Option<PathBuf> {
    match python_with(suite) {
        Ok(python) => Some(python),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: cannot provision Python with tests/{suite}/requirements.txt under CI: {why}")
        }
        Err(why) => {
            announce_skip(&format!("{test}: cannot provision Python with tests/{suite}/requirements.txt: {why}"));
            None
        }
    }
}

/// What the SDK checks expect beyond the defaults: one configured element.
pub fn sdk_check_config(config: &mut easel::config::Config) {
    let element = serde_json::json!({"id": "9f0d2c1e-5b7a-4e3c-8d21-6a4b3c2d1e0f", "name": "Watercolour wash",
                                     "base_model": "SDXL_1_0", "lora": "watercolor_v2"});
    config.elements.push(serde_json::from_value(element).unwrap());
}

/// A directory whose `node_modules` holds the packages locked in `tests/sdk/ts/package-lock.json`,
/// installed under `target/` with `npm ci` on first use, for the `node` on the `PATH`.
fn node_packages() -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/ts");
    let read = |name: &str| std::fs::read_to_string(source.join(name)).map_err(|e| format!("{name}: {e}"));
    let (manifest, locked) = (read("package.json")?, read("package-lock.json")?);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-node");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Tests in the other suite binary (`it`, `it_postgres`) may provision at the same time.
    let lock = std::fs::File::create(dir.with_extension("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    // The check needs the global `fetch` (Node 18 and later).
    let version = run(Command::new("node").arg("--version"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let major = version.trim_start_matches('v').split('.').next().and_then(|major| major.parse::<u32>().ok());
    if major.is_none_or(|major| major < 18) {
        return Err(format!("node {version} is too old: the check needs Node 18 or later"));
    }
    let stamp = dir.join("packages.installed");
    let wanted = format!("{manifest}\n{locked}");
    if std::fs::read_to_string(&stamp).ok() == Some(wanted.clone())
        && dir.join("node_modules/@leonardo-ai/sdk/package.json").exists()
    {
        return Ok(dir);
    }
    let _ = std::fs::remove_file(&stamp);
    for (name, text) in [("package.json", &manifest), ("package-lock.json", &locked)] {
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    // From npm's cache when it holds the locked versions (checked against the lock's integrity
    // hashes), so a machine that installed them once needs no registry.
    let npm_ci = ["ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"];
    run(Command::new("npm").args(npm_ci).current_dir(&dir))?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The directory of `node_packages`, or `None` after announcing the skip (a failure under CI).
fn node_or_skip(test: &str) -> Option<PathBuf> {
    match node_packages() {
        Ok(dir) => Some(dir),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: cannot provision Node with tests/sdk/ts/package-lock.json under CI: {why}")
        }
        Err(why) => {
            announce_skip(&format!("{test}: cannot provision Node with tests/sdk/ts/package-lock.json: {why}"));
            None
        }
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk_works_against_easel() {
    let Some(python) =
        tokio::task::spawn_blocking(|| python_or_skip("sdk", "the_official_python_sdk_works_against_easel"))
            .await
            .unwrap()
    else {
        return;
    };
    let app = spawn_app_with(sdk_check_config).await;
    let mut command = Command::new(python);
    command
        .arg(script("python_sdk_check.py"))
        .env("EASEL_URL", &app.origin)
        .env("EASEL_KEY", &app.admin.key)
        .env("EASEL_USER_ID", app.admin.id.to_string());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python SDK check passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_typescript_sdk_works_against_easel() {
    let test = "the_official_typescript_sdk_works_against_easel";
    let Some(packages) = tokio::task::spawn_blocking(move || node_or_skip(test)).await.unwrap() else {
        return;
    };
    let app = spawn_app_with(sdk_check_config).await;
    let mut command = Command::new("node");
    command
        .arg(script("ts/ts_sdk_check.mjs"))
        .env("EASEL_URL", &app.origin)
        .env("EASEL_KEY", &app.admin.key)
        .env("EASEL_USER_ID", app.admin.id.to_string())
        .env("LEONARDO_TS_SDK_DIR", packages);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "typescript SDK check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("typescript SDK check passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_verify_with_the_standard_webhooks_library() {
    let test = "callbacks_verify_with_the_standard_webhooks_library";
    let Some(python) = tokio::task::spawn_blocking(move || python_or_skip("sdk", test)).await.unwrap() else {
        return;
    };
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("verifier", &receiver.url, Some("abcd")).await;
    app.create_generation(&hooked.user, &small_generation("signed")).await;
    let request = receiver.wait_for(1).await.remove(0);

    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), serde_json::Value::from(value.to_str().unwrap())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &request.body).unwrap();
    let mut command = Command::new(python);
    command
        .arg(script("verify_webhook.py"))
        .env("SIGNING_SECRET", &hooked.signing_secret)
        .env("WEBHOOK_HEADERS", serde_json::Value::Object(headers).to_string())
        .env("WEBHOOK_BODY_FILE", &body_file);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("signature verified"), "{stdout}");
}
