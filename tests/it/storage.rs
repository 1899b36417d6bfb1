//! Image storage in an S3-compatible bucket: a real S3 server (moto, from PyPI, pinned in
//! `tests/s3/requirements.txt`, in a virtualenv the test makes), images written to the bucket,
//! served through `/cdn/`, deleted with their generation.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::sdk::python_or_skip;

/// An S3 server on a free port; killed when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Makes `config` keep its images in `url` (`s3://BUCKET/PREFIX`) on this server.
    pub fn use_bucket(&self, config: &mut easel::config::Config, url: &str) {
        config.storage.url = Some(url.into());
        config.storage.endpoint = Some(self.endpoint.clone());
        config.storage.region = Some("us-east-1".into());
        config.storage.access_key_id = Some("testing".into());
        config.storage.secret_access_key = Some(serde_json::from_value(json!("testing")).unwrap());
        config.storage.allow_http = true;
    }
}

pub async fn s3_server(test: &str) -> Option<S3Server> {
    let test = test.to_string();
    let python = tokio::task::spawn_blocking(move || python_or_skip("s3", &test)).await.unwrap()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), || async { client.get(&endpoint).send().await.ok().map(|_| ()) }).await;
    Some(S3Server { child, endpoint })
}

#[tokio::test(flavor = "multi_thread")]
async fn images_live_in_the_bucket_are_served_through_cdn_and_deleted_with_their_generation() {
    let Some(s3) =
        s3_server("images_live_in_the_bucket_are_served_through_cdn_and_deleted_with_their_generation").await
    else {
        return;
    };
    let client = reqwest::Client::new();
    assert!(client.put(format!("{}/easel-images", s3.endpoint)).send().await.unwrap().status().is_success());
    let app = spawn_app_with(|config| {
        s3.use_bucket(config, "s3://easel-images/prod");
    })
    .await;
    let user = &app.admin;
    let id = app.create_generation(user, &small_generation("a bucket of paint")).await;
    let generation = app.finished_generation(user, &id).await;
    assert_eq!(generation["status"], "COMPLETE");
    let url = generation["generated_images"][0]["url"].as_str().unwrap().to_string();
    let key = url.split("/cdn/").nth(1).unwrap().to_string();
    assert!(key.starts_with(&format!("users/{}/generations/{id}/", user.id)), "{key}");

    // The file is in the bucket, under the prefix, and Easel serves it from there.
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("easel-images")
        .with_endpoint(&s3.endpoint)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    let object = object_store::path::Path::parse(format!("prod/{key}")).unwrap();
    let stored = object_store::ObjectStore::get(&bucket, &object).await.unwrap().bytes().await.unwrap();
    let (status, content_type, served) = app.download(&url).await;
    assert_eq!((status, content_type.as_deref()), (StatusCode::OK, Some("image/jpeg")));
    assert_eq!(served, stored.to_vec());
    assert!(!app.dir.path().join("images").join(&key).exists(), "nothing is written locally");

    app.delete(user, &format!("/generations/{id}")).await;
    let gone = object_store::ObjectStore::head(&bucket, &object).await;
    assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "{gone:?}");
    assert_eq!(app.download(&url).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_public_base_url_replaces_the_cdn_route_in_image_urls() {
    let app =
        spawn_app_with(|config| config.storage.public_base_url = Some("https://images.example.com/e/".into())).await;
    let id = app.create_generation(&app.admin, &small_generation("elsewhere")).await;
    let generation = app.finished_generation(&app.admin, &id).await;
    let url = generation["generated_images"][0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("https://images.example.com/e/users/{}/generations/{id}/", app.admin.id)),
        "{url}"
    );
    let path = url.strip_prefix("https://images.example.com/e/").unwrap();
    assert_eq!(app.download(&format!("{}/cdn/{path}", app.origin)).await.0, StatusCode::OK);
}
