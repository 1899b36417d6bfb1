//! Several `easel serve` nodes on one PostgreSQL database: work shared without loss, a node killed
//! mid-stream taken over by the others, roles split across nodes, nodes woken by NOTIFY.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::child::*;
use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

const SEVERAL_NODES: &str = "several nodes share a PostgreSQL database; SQLite is single-node (process.rs)";

/// A data directory shared by the nodes (images, master key) and the suite's database.
struct Cluster {
    dir: TestDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    async fn new(ca: &TestCa, extra: &[(&str, &str)]) -> Cluster {
        let dir = test_dir().await;
        let mut env: Vec<(String, String)> = vec![
            ("EASEL_DATABASE_URL".into(), test_config(&dir).database_url()),
            ("EASEL_WEBHOOK__EXTRA_CA_CERTS".into(), ca.pem_path.display().to_string()),
            ("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS".into(), "[\"127.0.0.0/8\"]".into()),
            ("EASEL_WEBHOOK__RETRY_SCHEDULE".into(), "[\"0s\", \"100ms\", \"200ms\", \"400ms\", \"1s\"]".into()),
            ("EASEL_WEBHOOK__TIMEOUT".into(), "1s".into()),
            ("EASEL_WEBHOOK__CONNECT_TIMEOUT".into(), "1s".into()),
            ("EASEL_WEBHOOK__LEASE".into(), "2s".into()),
            ("EASEL_WEBHOOK__POLL_INTERVAL".into(), "200ms".into()),
            ("EASEL_RENDER__LEASE".into(), "2s".into()),
            ("EASEL_RENDER__POLL_INTERVAL".into(), "200ms".into()),
            ("EASEL_LOG".into(), "info".into()),
        ];
        for (name, value) in extra {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), value.to_string()));
        }
        Cluster { dir, env }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    /// A user with a key whose callbacks go to `url`; returns the API key.
    fn user_with_webhook(&self, url: &str) -> String {
        let env = self.env();
        let user = easel_json_with(
            self.dir.path(),
            &["users", "create", "--username", "cluster", "--concurrency-slots", "1000", "--json"],
            &env,
        );
        let key = easel_json_with(
            self.dir.path(),
            &[
                "keys",
                "create",
                "--user",
                user["id"].as_str().unwrap(),
                "--name",
                "cluster",
                "--webhook-url",
                url,
                "--json",
            ],
            &env,
        );
        key["key"].as_str().unwrap().to_string()
    }

    fn node(&self, roles: &str) -> EaselProcess {
        EaselProcess::start_with_args(self.dir.path(), &[], &[self.env(), vec![("EASEL_ROLES", roles)]].concat())
    }
}

// Two workers: the receiver reads what node 1 sent just before the kill while the test kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_survive_one_being_killed() {
    if not_applicable(Backend::Postgres, SEVERAL_NODES) {
        return;
    }
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply { delay: Duration::from_millis(10), ..Reply::ok() }).await;
    // Delivery leases long enough that only a kill explains a callback sent twice, even when a
    // loaded database holds a node's record of an attempt for a while.
    let cluster =
        Cluster::new(&ca, &[("EASEL_RENDER__SIMULATED_DURATION", "40ms"), ("EASEL_WEBHOOK__LEASE", "5s")]).await;
    let key = cluster.user_with_webhook(&receiver.url);
    let all = "[\"api\", \"render\", \"deliver\"]";
    let mut nodes = [cluster.node(all), cluster.node(all), cluster.node(all)];
    let client = reqwest::Client::new();

    let mut generations = Vec::new();
    let mut killed_at = None;
    for n in 0..60 {
        let alive: Vec<&EaselProcess> =
            nodes.iter().enumerate().filter(|(i, _)| killed_at.is_none() || *i != 1).map(|(_, node)| node).collect();
        let node = alive[n % alive.len()];
        generations.push(post_generation(&client, &node.origin, &key, &format!("cluster {n}")).await);
        if n == 25 {
            // Mid-stream: node 1 holds render leases and deliveries in flight.
            nodes[1].kill_9();
            // What node 1 wrote before it died may be read a little later; no other node can
            // send its deliveries again before their leases expire.
            tokio::time::sleep(Duration::from_millis(250)).await;
            killed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = killed_at.unwrap();

    // Every generation completes and is readable, with its images, through any surviving node.
    for (n, id) in generations.iter().enumerate() {
        let node = if n % 2 == 0 { &nodes[0] } else { &nodes[2] };
        let generation = completed_generation(&client, &node.origin, &key, id).await;
        let url = generation["generated_images"][0]["url"].as_str().unwrap();
        assert_eq!(client.get(url).send().await.unwrap().status(), StatusCode::OK, "{url}");
    }
    // Every callback arrives at least once; a duplicate is one that was in flight at the kill.
    let received = eventually(Duration::from_secs(60), || async {
        let received = receiver.received();
        let ids: std::collections::HashSet<String> =
            received.iter().map(|r| r.json()["data"]["object"]["id"].as_str().unwrap().to_string()).collect();
        generations.iter().all(|g| ids.contains(g)).then_some(received)
    })
    .await;
    let mut by_webhook_id: HashMap<String, Vec<Instant>> = HashMap::new();
    for request in &received {
        by_webhook_id.entry(request.header("webhook-id").unwrap().to_string()).or_default().push(request.at);
    }
    let mut duplicates = 0;
    for (id, mut arrivals) in by_webhook_id {
        arrivals.sort();
        for pair in arrivals.windows(2) {
            duplicates += 1;
            assert!(pair[0] <= killed_at && killed_at <= pair[1], "delivery {id} arrived twice without a kill between");
        }
    }
    eprintln!("multi-node: {} generations, {} callbacks, {duplicates} duplicates", generations.len(), received.len());
}

#[tokio::test]
async fn api_only_and_worker_only_nodes_cooperate_and_wake_each_other() {
    if not_applicable(Backend::Postgres, SEVERAL_NODES) {
        return;
    }
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    // Polls so slow that only NOTIFY can explain a prompt pick-up.
    let cluster =
        Cluster::new(&ca, &[("EASEL_RENDER__POLL_INTERVAL", "30s"), ("EASEL_WEBHOOK__POLL_INTERVAL", "30s")]).await;
    let key = cluster.user_with_webhook(&receiver.url);
    let api = cluster.node("[\"api\"]");
    let worker = cluster.node("[\"render\", \"deliver\"]");
    let client = reqwest::Client::new();

    // The worker node serves no API, only its health and egress addresses.
    let (status, _) = get(&client, format!("{}/api/rest/v1/me", worker.origin), &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&client, format!("{}/healthz", worker.origin), "").await;
    assert_eq!(status, StatusCode::OK);

    for n in 0..3 {
        let started = Instant::now();
        let id = post_generation(&client, &api.origin, &key, &format!("split roles {n}")).await;
        completed_generation(&client, &api.origin, &key, &id).await;
        receiver.wait_for(n + 1).await;
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}: the worker was not woken", started.elapsed());
    }
    // A redelivery requested on the API node is sent by the worker node at once.
    let list = easel_json_with(cluster.dir.path(), &["deliveries", "list", "--json"], &cluster.env());
    let delivery = list[0]["id"].as_str().unwrap().to_string();
    // The receiver may read a callback before the worker has recorded its attempt; until then the
    // delivery is still in flight, and a redelivery of it would rightly be refused as queued.
    let url = format!("{}/api/rest/v1/deliveries/{delivery}", api.origin);
    eventually(Duration::from_secs(10), || async {
        (get(&client, url.clone(), &key).await.1["delivery"]["status"] == "succeeded").then_some(())
    })
    .await;
    let started = Instant::now();
    let response = client
        .post(format!("{}/api/rest/v1/deliveries/{delivery}/retry", api.origin))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    receiver.wait_for(4).await;
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_lost_database_connection_is_survived() {
    if not_applicable(Backend::Postgres, SEVERAL_NODES) {
        return;
    }
    let app = spawn_app_with(|config| config.render.poll_interval = Duration::from_millis(200)).await;
    let user = &app.admin;
    let first = app.create_generation(user, &small_generation("before")).await;
    app.finished_generation(user, &first).await;

    // Every connection of this database is cut, the notification listener's included.
    assert!(app.dir.database.as_ref().unwrap().cut_connections("TRUE").await > 0);

    // The server carries on: new connections, the same behaviour.
    let second = eventually(Duration::from_secs(20), || async {
        let reply = app.post(user, "/generations", &small_generation("after")).await;
        (reply.status == StatusCode::OK)
            .then(|| reply.body["sdGenerationJob"]["generationId"].as_str().unwrap().to_string())
    })
    .await;
    assert_eq!(app.finished_generation(user, &second).await["status"], "COMPLETE");
    let reply = app.get(user, &format!("/generations/{first}")).await;
    assert_eq!(reply.body["generations_by_pk"]["status"], "COMPLETE");
}

#[tokio::test]
async fn nodes_starting_together_on_a_fresh_database_make_one_first_user() {
    if not_applicable(Backend::Postgres, SEVERAL_NODES) {
        return;
    }
    let ca = TestCa::new();
    let cluster = Cluster::new(&ca, &[]).await;
    let mut nodes: Vec<EaselProcess> = std::thread::scope(|scope| {
        let starting: Vec<_> =
            (0..3).map(|_| scope.spawn(|| cluster.node("[\"api\", \"render\", \"deliver\"]"))).collect();
        starting.into_iter().map(|node| node.join().expect("every node starts")).collect()
    });
    // Whichever node makes the first user prints its key once it listens; the others print none.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter_mut().any(|node| node.printed_key(Duration::from_millis(100)).is_some()) {
        assert!(Instant::now() < deadline, "no node printed the first key");
    }
    let keys: Vec<String> = nodes.iter_mut().filter_map(|node| node.printed_key(Duration::from_millis(500))).collect();
    assert_eq!(keys.len(), 1, "exactly one node makes the first user and key");
    let client = reqwest::Client::new();
    for node in &nodes {
        let (status, me) = get(&client, format!("{}/api/rest/v1/me", node.origin), &keys[0]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["user_details"][0]["user"]["username"], "admin");
    }
}
