//! A fresh PostgreSQL database for one bench scenario, on the server of
//! `EASEL_BENCH_POSTGRES_URL` (an admin URL), dropped when the scenario is done: a drain leaves
//! about a gigabyte behind otherwise.

pub struct BenchDatabase {
    admin: String,
    name: String,
    /// The database's own URL.
    pub url: String,
}

impl BenchDatabase {
    /// A new database, or `None` without `EASEL_BENCH_POSTGRES_URL` (the bench runs on SQLite).
    pub async fn from_env() -> Option<BenchDatabase> {
        let admin = std::env::var("EASEL_BENCH_POSTGRES_URL").ok()?;
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
        let name = format!("easel_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
        pool.close().await;
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Some(BenchDatabase { admin, name, url: url.to_string() })
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped inside the bench's runtime, which cannot be blocked on: a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}: {dropped:?}", self.name);
        }
    }
}
