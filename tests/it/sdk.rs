//! The official Leonardo SDKs as clients. The Python SDK (pinned in `tests/sdk/requirements.txt`)
//! runs from a virtualenv that the test makes under `target/` on first use. Without Python or
//! PyPI the test says loudly that it was skipped, except under CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

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
    let run = |command: &mut Command| -> Result<(), String> {
        let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
    };
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
