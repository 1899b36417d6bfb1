//! The prompt tools: built in, and through an OpenAI-compatible chat-completions server (here a
//! small imitation on loopback that answers like llama.cpp's `llama-server` and records what it
//! was sent).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::*;

#[tokio::test]
async fn the_built_in_prompt_tools_answer_in_the_sdk_shape() {
    let app = spawn_app().await;
    let user = &app.admin;
    let mut prompts = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let reply = app.post(user, "/prompt/random", &json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let generation = &reply.body["promptGeneration"];
        assert_eq!(generation["apiCreditCost"], 0);
        assert_eq!(generation["cost"], json!({"amount": "0", "unit": "CREDITS"}));
        let prompt = generation["prompt"].as_str().unwrap().to_string();
        assert!(prompt.len() > 20 && prompt.contains(", "), "{prompt}");
        prompts.insert(prompt);
    }
    assert!(prompts.len() > 1, "five random prompts were all {prompts:?}");

    let body = json!({"prompt": "a lighthouse in a storm"});
    let first = app.post(user, "/prompt/improve", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let improved = first.body["promptGeneration"]["prompt"].as_str().unwrap();
    assert!(improved.starts_with("a lighthouse in a storm, ") && improved.len() > 40, "{improved}");
    assert_eq!(
        app.post(user, "/prompt/improve", &body).await.body,
        first.body,
        "the same prompt improves the same way"
    );
    // The improved prompt is a valid generation prompt.
    assert_eq!(app.post(user, "/generations", &json!({"prompt": improved})).await.status, StatusCode::OK);

    let cases = [
        (json!({}), "prompt", "required"),
        (json!({"prompt": "   "}), "prompt", "required"),
        (json!({"prompt": "x".repeat(1501)}), "prompt", "at most 1500"),
        (json!({"prompt": "a cat", "isVideo": "yes"}), "isVideo", "boolean"),
        (json!({"prompt": "a cat", "promptInstructions": 3}), "promptInstructions", "string"),
    ];
    for (body, field, words) in cases {
        let reply = app.post(user, "/prompt/improve", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        let error = reply.body["error"].as_str().unwrap();
        assert!(error.contains(&format!("`{field}`")) && error.contains(words), "{body}: {error}");
    }
    let anonymous = app.send(app.client.post(app.api("/prompt/random"))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// What the imitation was sent, and what it answers next.
#[derive(Default)]
struct Chat {
    requests: Vec<(HeaderMap, Value)>,
    answer: Option<(u16, Value)>,
}

async fn chat_completions(
    State(chat): State<Arc<Mutex<Chat>>>,
    headers: HeaderMap,
    body: String,
) -> (AxumStatus, String) {
    let mut chat = chat.lock().unwrap();
    chat.requests.push((headers, serde_json::from_str(&body).unwrap_or(Value::Null)));
    let (status, answer) = chat.answer.clone().unwrap_or((
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "tiny",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "  \"A red fox\n asleep in fresh snow, soft dawn light\"  "}}]}),
    ));
    (AxumStatus::from_u16(status).unwrap(), answer.to_string())
}

async fn start_chat_server() -> (String, Arc<Mutex<Chat>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let chat = Arc::new(Mutex::new(Chat::default()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat_completions))
        .with_state(chat.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, chat)
}

#[tokio::test]
async fn a_configured_chat_completions_server_writes_the_prompts() {
    let (url, chat) = start_chat_server().await;
    let app = spawn_app_with(|config| {
        config.prompt_tools.url = Some(url.clone());
        config.prompt_tools.model = Some("tiny".into());
        config.prompt_tools.api_key = Some(serde_json::from_value(json!("llm-secret")).unwrap());
    })
    .await;
    let user = &app.admin;
    let body = json!({"prompt": "a fox", "promptInstructions": "make it wintry", "isVideo": true});
    let reply = app.post(user, "/prompt/improve", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["promptGeneration"]["prompt"], "A red fox asleep in fresh snow, soft dawn light");
    let random = app.post(user, "/prompt/random", &json!({})).await;
    assert_eq!(random.body["promptGeneration"]["prompt"], "A red fox asleep in fresh snow, soft dawn light");

    let requests = std::mem::take(&mut chat.lock().unwrap().requests);
    assert_eq!(requests.len(), 2);
    let (headers, sent) = &requests[0];
    assert_eq!(headers["authorization"], "Bearer llm-secret");
    assert_eq!(sent["model"], "tiny");
    assert_eq!(sent["messages"][1], json!({"role": "user", "content": "a fox"}));
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("video generator") && system.contains("make it wintry"), "{system}");

    // The server's own error, in words, as a 502.
    chat.lock().unwrap().answer = Some((500, json!({"error": {"code": 500, "message": "model is still loading"}})));
    let reply = app.post(user, "/prompt/random", &json!({})).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text);
    assert_eq!(reply.body["code"], "upstream-failed");
    assert!(
        reply.text.contains("the prompt model answered 500") && reply.text.contains("model is still loading"),
        "{}",
        reply.text
    );
    // An answer without a prompt.
    chat.lock().unwrap().answer = Some((200, json!({"choices": []})));
    let reply = app.post(user, "/prompt/random", &json!({})).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.text.contains("choices[0].message.content"), "{}", reply.text);
}

#[tokio::test]
async fn an_unreachable_prompt_model_is_a_502_that_says_where() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(|config| config.prompt_tools.url = Some(url.clone())).await;
    let reply = app.post(&app.admin, "/prompt/improve", &json!({"prompt": "a fox"})).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text);
    assert!(
        reply.text.contains("the prompt model cannot be reached at") && reply.text.contains(&url),
        "{}",
        reply.text
    );
}
