//! The `easel` binary as a child process: `serve` (with its log captured), the operator CLI.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

pub const EASEL: &str = env!("CARGO_BIN_EXE_easel");

/// `easel serve` in a child process; killed when dropped.
pub struct EaselProcess {
    pub child: Child,
    pub origin: String,
    /// What it printed on stdout so far (see [`EaselProcess::bootstrap_key`]).
    pub stdout: Vec<String>,
    stdout_lines: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl EaselProcess {
    /// Starts `easel serve` on `data_dir` (port 0) with extra environment variables and waits until
    /// it listens.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> EaselProcess {
        Self::start_with_args(data_dir, &[], env)
    }

    /// Same, with global arguments (such as `--config FILE`) before `serve`.
    pub fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> EaselProcess {
        let mut command = Command::new(EASEL);
        command
            .args(args)
            .arg("serve")
            .env("EASEL_LISTEN", "127.0.0.1:0")
            .env("EASEL_DATA_DIR", data_dir)
            .env("EASEL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.envs(database_env(data_dir));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("easel starts");
        let (stderr_tx, stderr) = mpsc::channel();
        let child_stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                let _ = stderr_tx.send(line);
            }
        });
        let (stdout_tx, stdout_rx) = mpsc::channel();
        let child_stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(child_stdout).lines().map_while(Result::ok) {
                let _ = stdout_tx.send(line);
            }
        });
        let mut log = Vec::new();
        let origin = loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("easel did not start: {log:#?}"));
            if let Some(rest) = line.split("easel is listening addr=").nth(1) {
                break format!("http://{}", rest.split_whitespace().next().unwrap());
            }
            log.push(line);
        };
        EaselProcess { child, origin, stdout: Vec::new(), stdout_lines: stdout_rx, stderr }
    }

    /// The first API key, from the banner a start on a fresh database prints once it listens
    /// (waiting up to 30 s for the whole banner).
    pub fn bootstrap_key(&mut self) -> String {
        self.printed_key(Duration::from_secs(30)).expect("the first start prints an API key")
    }

    /// The API key this start printed within `wait` after it listened, if it printed one: a start
    /// on a database that has users prints none (the banner follows the listening line, so a
    /// check that none came cannot prove it never will).
    pub fn printed_key(&mut self, wait: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + wait;
        // The banner's last line names the console.
        while !self.stdout.iter().any(|line| line.contains("web console")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => break,
            }
        }
        self.stdout.iter().find_map(|l| l.trim().strip_prefix("api key:").map(|k| k.trim().to_string()))
    }

    /// The log lines not read yet, up to the end of the log (once the process has exited).
    pub fn rest_of_log(&self) -> Vec<String> {
        std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(10)).ok()).collect()
    }

    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("easel did not exit within 10 s of SIGTERM");
    }
}

impl Drop for EaselProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `EASEL_DATABASE_URL` for a child process on `data_dir`: the suite's database for that directory
/// (noted by `test_dir` on PostgreSQL); none on SQLite, whose database lives in the directory.
pub fn database_env(data_dir: &Path) -> Option<(&'static str, String)> {
    let url = std::fs::read_to_string(data_dir.join(DATABASE_URL_FILE)).ok()?;
    Some(("EASEL_DATABASE_URL", url))
}

/// Runs an operator command; returns (success, stdout, stderr).
pub fn easel_cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    easel_cli_with(data_dir, args, &[])
}

/// Same, with extra environment variables.
pub fn easel_cli_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(EASEL);
    command.args(args).env("EASEL_DATA_DIR", data_dir).envs(database_env(data_dir));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("easel runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

pub fn easel_json(data_dir: &Path, args: &[&str]) -> Value {
    easel_json_with(data_dir, args, &[])
}

pub fn easel_json_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let (ok, stdout, stderr) = easel_cli_with(data_dir, args, env);
    assert!(ok, "easel {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("easel {args:?} printed no JSON ({e}): {stdout}"))
}

pub async fn get(client: &reqwest::Client, url: String, key: &str) -> (StatusCode, Value) {
    let response = client.get(url).bearer_auth(key).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a generation on a server in a child process; returns its id.
pub async fn post_generation(client: &reqwest::Client, origin: &str, key: &str, prompt: &str) -> String {
    let response = client
        .post(format!("{origin}/api/rest/v1/generations"))
        .bearer_auth(key)
        .json(&small_generation(prompt))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["sdGenerationJob"]["generationId"].as_str().unwrap().to_string()
}

/// Polls a server in a child process until the generation is COMPLETE.
pub async fn completed_generation(client: &reqwest::Client, origin: &str, key: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let (_, body) = get(client, format!("{origin}/api/rest/v1/generations/{id}"), key).await;
        let generation = body["generations_by_pk"].clone();
        (generation["status"] == "COMPLETE").then_some(generation)
    })
    .await
}
