//! `/keys`: API keys managed over REST (the console's keys page): the manageKeys permission,
//! isolation between users, secrets shown once, deletion, rotation keeping the webhook details.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

/// A new user whose one key may manage keys.
async fn managing_user(app: &TestApp, username: &str) -> TestUser {
    let store = &*app.easel.store;
    let user = easel::admin::create_user(store, username, 10).await.expect("user created");
    let spec = easel::admin::KeySpec {
        user: user.id,
        name: "console",
        webhook_url: None,
        webhook_api_key: None,
        manage_keys: true,
        own_bins: None,
    };
    let key = easel::admin::create_key(store, &app.easel.master_key, &spec, &app.config.webhook).await.unwrap();
    TestUser { id: user.id, key: key.key }
}

fn as_user(key: &Value) -> TestUser {
    TestUser { id: easel::ids::UserId::random(), key: key["key"].as_str().expect("the key is shown").to_string() }
}

#[tokio::test]
async fn a_key_without_the_permission_is_refused_with_403() {
    let app = spawn_app().await;
    let plain = app.new_user("plain").await;
    let missing = uuid::Uuid::new_v4();
    let replies = [
        app.get(&plain, "/keys").await,
        app.post(&plain, "/keys", &json!({"name": "mine"})).await,
        app.delete(&plain, &format!("/keys/{missing}")).await,
        app.post(&plain, &format!("/keys/{missing}/rotate"), &json!({})).await,
    ];
    for reply in replies {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert_eq!(reply.body["code"], "permission-denied");
        assert!(reply.body["error"].as_str().unwrap().contains("manageKeys"), "{}", reply.text);
    }
    // The operator's first key has the permission; a key it makes has it only when asked for.
    let reply = app.get(&app.admin, "/keys").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let keys = reply.body["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["manageKeys"], true);
    assert_eq!(reply.body["currentKeyId"], keys[0]["id"]);

    let created = app.post(&app.admin, "/keys", &json!({"name": "server"})).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    assert_eq!(created.body["manageKeys"], false);
    assert_eq!(app.get(&as_user(&created.body), "/keys").await.status, StatusCode::FORBIDDEN);
    let manager = app.post(&app.admin, "/keys", &json!({"name": "laptop", "manageKeys": true})).await;
    assert_eq!(manager.body["manageKeys"], true);
    assert_eq!(app.get(&as_user(&manager.body), "/keys").await.status, StatusCode::OK);
    // Without a key at all: 401, as everywhere.
    let reply = app.send(app.client.get(app.api("/keys"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keys_of_another_user_are_invisible() {
    let app = spawn_app().await;
    let alice = managing_user(&app, "alice").await;
    let bob = managing_user(&app, "bob").await;
    let extra = app.post(&alice, "/keys", &json!({"name": "alice's server"})).await;
    let alice_key = extra.body["id"].as_str().unwrap().to_string();

    let listed = app.get(&bob, "/keys").await;
    assert_eq!(listed.body["apiKeys"].as_array().unwrap().len(), 1, "{}", listed.text);
    assert!(!listed.text.contains(&alice_key));
    assert!(!listed.text.contains("alice"));

    let missing = uuid::Uuid::new_v4().to_string();
    for (method, theirs, nonexistent) in [
        ("DELETE", format!("/keys/{alice_key}"), format!("/keys/{missing}")),
        ("POST", format!("/keys/{alice_key}/rotate"), format!("/keys/{missing}/rotate")),
    ] {
        let call = |path: String| {
            let request = if method == "DELETE" {
                app.client.delete(app.api(&path))
            } else {
                app.client.post(app.api(&path)).json(&json!({}))
            };
            app.send(request.bearer_auth(&bob.key))
        };
        let (reply, baseline) = (call(theirs).await, call(nonexistent).await);
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
        assert_eq!(reply.status, baseline.status);
        assert_eq!(reply.text.replace(&alice_key, "ID"), baseline.text.replace(&missing, "ID"));
    }
    // Alice's key was neither deleted nor copied.
    assert_eq!(app.get(&as_user(&extra.body), "/me").await.status, StatusCode::OK);
    assert_eq!(app.get(&alice, "/keys").await.body["apiKeys"].as_array().unwrap().len(), 2);
    assert_eq!(app.get(&bob, "/keys").await.body["apiKeys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_created_key_works_and_its_secrets_are_shown_once() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let body = json!({"name": "prod", "webhookCallbackUrl": receiver.url, "webhookCallbackApiKey": "hook-secret-1234"});
    let created = app.post(&app.admin, "/keys", &body).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let key = created.body["key"].as_str().unwrap().to_string();
    let signing_secret = created.body["signingSecret"].as_str().unwrap().to_string();
    assert!(signing_secret.starts_with("whsec_"));
    assert_eq!(created.body["webhookCallbackUrl"], receiver.url);
    assert_eq!(created.body["webhookCallbackApiKey"], "********");
    assert_eq!(created.body["maskedKey"], format!("********{}", &key[key.len() - 4..]));
    assert!(!created.text.contains("hook-secret-1234"), "the webhook key is never shown back");

    // It works: generations made with it call back with its webhook key, signed with its secret.
    let user = TestUser { id: app.admin.id, key: key.clone() };
    assert_eq!(app.get(&user, "/me").await.status, StatusCode::OK);
    app.create_generation(&user, &small_generation("made with a REST key")).await;
    let request = receiver.wait_for(1).await.remove(0);
    assert_eq!(request.header("authorization"), Some("Bearer hook-secret-1234"));
    crate::webhooks::verify_signature(&request, &signing_secret);

    // The listing shows it masked, never a secret.
    let listed = app.get(&app.admin, "/keys").await;
    let entry = listed.body["apiKeys"].as_array().unwrap().iter().find(|k| k["id"] == created.body["id"]).unwrap();
    assert_eq!(entry["maskedKey"], created.body["maskedKey"]);
    assert_eq!(entry["webhook"]["state"], "active");
    assert!(entry.get("key").is_none() && entry.get("signingSecret").is_none(), "{entry}");
    for secret in [key.as_str(), signing_secret.as_str(), "hook-secret-1234"] {
        assert!(!listed.text.contains(secret), "a secret leaked into the listing: {}", listed.text);
    }
}

#[tokio::test]
async fn key_creation_refuses_bad_input_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "a", "webhookCallbackUrl": "http://hooks.example.com/x"}), "webhookCallbackUrl"),
        (json!({"name": "a", "webhookCallbackUrl": "https://127.0.0.1/x"}), "webhookCallbackUrl"),
        (json!({"name": "a", "webhookCallbackApiKey": "abcd"}), "webhookCallbackApiKey"),
        (
            json!({"name": "a", "webhookCallbackUrl": "https://hooks.example.com/x", "webhookCallbackApiKey": "a b"}),
            "webhookCallbackApiKey",
        ),
        (json!({"name": "a", "manageKeys": "yes"}), "manageKeys"),
        (json!({"name": "a", "webhookUrl": "https://hooks.example.com/x"}), "webhookUrl"),
        (json!(["name"]), "JSON object"),
    ];
    for (body, field) in cases {
        let reply = app.post(&app.admin, "/keys", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.body["code"], "validation-failed", "{body}");
        assert!(reply.body["error"].as_str().unwrap().contains(field), "{body} must name {field}: {}", reply.text);
    }
    let reply = app.send(app.client.post(app.api("/keys")).bearer_auth(&app.admin.key).body("{not json")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["code"], "parse-failed");
    // Nothing was created.
    assert_eq!(app.get(&app.admin, "/keys").await.body["apiKeys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_key_stops_working_and_a_key_cannot_delete_itself() {
    let app = spawn_app().await;
    let created = app.post(&app.admin, "/keys", &json!({"name": "short-lived"})).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let user = as_user(&created.body);
    assert_eq!(app.get(&user, "/me").await.status, StatusCode::OK);

    let reply = app.delete(&app.admin, &format!("/keys/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"id": id, "deleted": true}));
    assert_eq!(app.get(&user, "/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.delete(&app.admin, &format!("/keys/{id}")).await.status, StatusCode::NOT_FOUND);
    assert!(!app.get(&app.admin, "/keys").await.text.contains(&id));

    let own = app.get(&app.admin, "/keys").await.body["currentKeyId"].as_str().unwrap().to_string();
    let reply = app.delete(&app.admin, &format!("/keys/{own}")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.body["error"].as_str().unwrap().contains("rotate"), "{}", reply.text);
    assert_eq!(app.get(&app.admin, "/me").await.status, StatusCode::OK);
    let reply = app.delete(&app.admin, "/keys/not-a-uuid").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rotation_keeps_the_webhook_details_and_shows_only_the_new_secrets() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let body = json!({"name": "prod", "webhookCallbackUrl": receiver.url, "webhookCallbackApiKey": "hook-secret-1234",
                      "manageKeys": true});
    let first = app.post(&app.admin, "/keys", &body).await;
    let first_id = first.body["id"].as_str().unwrap().to_string();
    let first_secret = first.body["signingSecret"].as_str().unwrap().to_string();

    let rotated = app.post(&app.admin, &format!("/keys/{first_id}/rotate"), &json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(rotated.body["replaces"], first_id);
    assert_ne!(rotated.body["id"], first_id);
    assert_eq!(rotated.body["name"], "prod");
    assert_eq!(rotated.body["webhookCallbackUrl"], receiver.url);
    assert_eq!(rotated.body["webhookCallbackApiKey"], "********");
    assert_eq!(rotated.body["manageKeys"], true, "the permission is kept");
    assert_eq!(rotated.body["signingSecret"], Value::Null, "the kept secret is not shown again");
    assert_eq!(rotated.body["signingSecretKept"], true);
    let second = as_user(&rotated.body);
    assert_ne!(second.key, first.body["key"].as_str().unwrap());

    // Both keys work until the old one is deleted.
    let old = as_user(&first.body);
    assert_eq!(app.get(&old, "/me").await.status, StatusCode::OK);
    assert_eq!(app.get(&second, "/me").await.status, StatusCode::OK);
    // The new key calls back the same URL with the same webhook key, signed with the same secret.
    app.create_generation(&second, &small_generation("after rotation")).await;
    let request = receiver.wait_for(1).await.remove(0);
    assert_eq!(request.header("authorization"), Some("Bearer hook-secret-1234"));
    crate::webhooks::verify_signature(&request, &first_secret);

    // The new key deletes the old one.
    assert_eq!(app.delete(&second, &format!("/keys/{first_id}")).await.status, StatusCode::OK);
    assert_eq!(app.get(&old, "/me").await.status, StatusCode::UNAUTHORIZED);

    // A rotation with a new signing secret shows it, once, and signs with it.
    let second_id = rotated.body["id"].as_str().unwrap().to_string();
    let body = json!({"name": "prod (2)", "newSigningSecret": true});
    let third = app.post(&second, &format!("/keys/{second_id}/rotate"), &body).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text);
    assert_eq!(third.body["name"], "prod (2)");
    assert_eq!(third.body["signingSecretKept"], false);
    let new_secret = third.body["signingSecret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, first_secret);
    app.create_generation(&as_user(&third.body), &small_generation("new secret")).await;
    let request = receiver.wait_for(2).await.remove(1);
    assert_eq!(request.header("authorization"), Some("Bearer hook-secret-1234"));
    crate::webhooks::verify_signature(&request, &new_secret);
    let listed = app.get(&second, "/keys").await;
    for secret in [new_secret.as_str(), first_secret.as_str(), third.body["key"].as_str().unwrap()] {
        assert!(!listed.text.contains(secret));
    }
    let reply = app.post(&second, &format!("/keys/{second_id}/rotate"), &json!({"newSecret": true})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("newSecret"), "{}", reply.text);
}

#[tokio::test]
async fn the_operator_grants_the_permission_with_manage_keys() {
    use crate::child::{easel_cli, easel_json};
    let app = spawn_app().await;
    let user = easel_json(app.dir.path(), &["users", "create", "--username", "olga", "--json"]);
    let user_id = user["id"].as_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--user", user_id, "--name", "console key", "--json"];
        args.extend_from_slice(extra);
        easel_json(app.dir.path(), &args)
    };
    let (manager, plain) = (create(&["--manage-keys"]), create(&[]));
    assert_eq!(manager["manageKeys"], true);
    assert_eq!(plain["manageKeys"], false);
    assert_eq!(app.get(&as_user(&manager), "/keys").await.status, StatusCode::OK);
    assert_eq!(app.get(&as_user(&plain), "/keys").await.status, StatusCode::FORBIDDEN);
    let (ok, stdout, _) = easel_cli(app.dir.path(), &["keys", "list", "--user", user_id]);
    assert!(ok && stdout.matches("(manages keys)").count() == 1, "{stdout}");
    // The masked key the CLI lists is the REST listing's.
    let listed = easel_json(app.dir.path(), &["keys", "list", "--user", user_id, "--json"]);
    let key = manager["key"].as_str().unwrap();
    assert!(listed.as_array().unwrap().iter().any(|k| k["maskedKey"] == format!("********{}", &key[key.len() - 4..])));
}

#[tokio::test]
async fn a_key_deleted_elsewhere_stops_working_within_the_auth_cache_ttl() {
    let ttl = std::time::Duration::from_millis(500);
    let app = spawn_app_with(|config| config.api.auth_cache_ttl = ttl).await;
    let user = app.new_user("cached").await;
    assert_eq!(app.get(&user, "/me").await.status, StatusCode::OK, "authenticated, and remembered");

    // Deleted through another store on the same database, as by another node or `easel keys delete`.
    let elsewhere = easel::store::open(&app.config).await.unwrap();
    let keys = elsewhere.list_api_keys(Some(user.id)).await.unwrap();
    assert!(elsewhere.delete_api_key(keys[0].id, easel::clock::now_ms()).await.unwrap());
    let deleted = std::time::Instant::now();
    loop {
        if app.get(&user, "/me").await.status == StatusCode::UNAUTHORIZED {
            break;
        }
        // The TTL, and room for a slow request answered from the cache just before it expired.
        let bound = ttl + std::time::Duration::from_secs(3);
        assert!(deleted.elapsed() < bound, "the key still worked {:?} after its deletion", deleted.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Deleted through this node's own store: refused at once, though it was just used.
    let other = app.new_user("cached-too").await;
    assert_eq!(app.get(&other, "/me").await.status, StatusCode::OK);
    let keys = app.easel.store.list_api_keys(Some(other.id)).await.unwrap();
    assert!(app.easel.store.delete_api_key(keys[0].id, easel::clock::now_ms()).await.unwrap());
    assert_eq!(app.get(&other, "/me").await.status, StatusCode::UNAUTHORIZED);
}

/// The console's "create a key calling back this bin": `POST /keys` with a webhook URL of one of
/// this server's own bins is accepted although the test server's `public_url` is plain http on
/// loopback (the delivery is handed to the bin in-process), and its callbacks arrive in the bin,
/// bearer matched and signature verified. Every other plain-http URL, on this server or not, is
/// still refused, naming the field.
#[tokio::test]
async fn a_key_created_over_rest_may_call_back_a_bin_of_this_server_and_nothing_else_plain_http() {
    let app = spawn_app().await;
    let bin = app.post(&app.admin, "/inspector/bins", &json!({})).await;
    assert_eq!(bin.status, StatusCode::CREATED, "{}", bin.text);
    let (id, url) = (bin.body["id"].as_str().unwrap(), bin.body["url"].as_str().unwrap());
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    for other in [
        format!("{}/api/rest/v1/me", app.origin),
        format!("{}/inspect/not-a-bin", app.origin),
        format!("http://hooks.example.com/inspect/{id}"),
    ] {
        let reply = app.post(&app.admin, "/keys", &json!({"name": "not a bin", "webhookCallbackUrl": other})).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{other} must be refused: {}", reply.text);
        assert!(reply.body["error"].as_str().unwrap().contains("webhookCallbackUrl"), "{}", reply.text);
    }

    let hook_url = format!("{url}/callbacks");
    let reply = app
        .post(
            &app.admin,
            "/keys",
            &json!({"name": "watching my callbacks", "webhookCallbackUrl": hook_url, "webhookCallbackApiKey": "bin-hook-key"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["webhookCallbackUrl"], hook_url.as_str());
    let key_id = reply.body["id"].clone();
    let hooked = TestUser { id: app.admin.id, key: reply.body["key"].as_str().unwrap().to_string() };

    let generation = app.create_generation(&hooked, &small_generation("a bin watching its callbacks")).await;
    let delivery = app.settled_delivery(&hooked, &generation).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(delivery["url"], hook_url.as_str());

    let requests = app.get(&app.admin, &format!("/inspector/bins/{id}/requests")).await;
    assert_eq!(requests.status, StatusCode::OK, "{}", requests.text);
    let requests = requests.body["requests"].as_array().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let callback = &requests[0];
    assert_eq!((callback["method"].as_str(), callback["path"].as_str()), (Some("POST"), Some("/callbacks")));
    let body: Value = serde_json::from_str(callback["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["object"]["id"], generation.as_str());
    let checks = callback["callbackChecks"].as_array().expect("the bin checks the key calling it back");
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0]["apiKeyId"], key_id);
    assert_eq!(checks[0]["bearerMatched"], true, "{:#}", checks[0]);
    assert_eq!(checks[0]["signatureVerified"], true, "{:#}", checks[0]);
}
