//! How fast a revocation reaches another cached instance: two instances on
//! one database, both with `cache(store.invalidations())`; one revokes a key
//! the other serves from its cache, and the other verifies it every 1 ms
//! until it refuses. Measured from the revoke's return (its commit is
//! acknowledged) to the first refusal; revokes alternate between the two
//! instances and come after a random pause, so that they fall anywhere in
//! the heartbeat or poll cycle. PostgreSQL (LISTEN/NOTIFY) and MySQL/MariaDB
//! run when their URLs are set; SQLite (a file, two pools) always runs.
//!
//! `TEAMKEY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!  TEAMKEY_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!  cargo bench -p teamkey-sqlx --all-features --bench propagation`
//!
//! `TEAMKEY_BENCH_REVOKES` sets the revokes per database (default 200, 100
//! each way). Figures go to docs/caching.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

#[path = "../tests/support/databases.rs"]
mod databases;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use databases::{MyDatabase, PgSchema, env_url, my_store, pg_store, unique};
use teamkey_core::test_kit::CountingStore;
use teamkey_core::{CreateOptions, InvalidationSource, KeyManager, KeyStore, NewKey, TeamId};
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey_sqlx::{SqlxInvalidations, SqlxStore, sqlx};

fn revokes() -> usize {
    std::env::var("TEAMKEY_BENCH_REVOKES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// A cached instance, and its store's call counts (to prove hits).
fn cached<DB>(store: &SqlxStore<DB>) -> (KeyManager, Arc<CountingStore<SqlxStore<DB>>>)
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
    SqlxInvalidations<DB>: InvalidationSource,
{
    let counted = Arc::new(CountingStore::new(store.clone()));
    let keys = KeyManager::builder(Arc::clone(&counted))
        .cache(store.invalidations())
        .build();
    (keys, counted)
}

/// A small pseudo-random sequence, for pauses.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        Self(RandomState::new().hash_one(Instant::now()) | 1)
    }

    /// 0 to `max`, about uniformly.
    fn up_to(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

async fn measure<DB>(label: &str, a_store: SqlxStore<DB>, b_store: SqlxStore<DB>)
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
    SqlxInvalidations<DB>: InvalidationSource,
{
    let (a, a_counts) = cached(&a_store);
    let (b, b_counts) = cached(&b_store);
    let instances = [a, b];
    let counts = [a_counts, b_counts];
    // Teams of 50 keys: a team may hold at most 100 active ones.
    let team = |i: usize| TeamId::new(format!("bench-{}", i / 50)).unwrap();
    let n = revokes();
    let mut made: Vec<NewKey> = Vec::with_capacity(n);
    for i in 0..n {
        made.push(
            instances[0]
                .create(&team(i), &format!("key {i}"), CreateOptions::default())
                .await
                .unwrap(),
        );
    }
    // Both instances cache every key, once the feeds have reported the
    // creations (which forget the ids).
    for _ in 0..2 {
        for keys in &instances {
            for m in &made {
                keys.verify(m.key.expose_secret()).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut jitter = Jitter::new();
    let mut latencies = Vec::with_capacity(n);
    let mut hits = 0;
    for (i, m) in made.iter().enumerate() {
        let (writer, reader) = (&instances[i % 2], &instances[(i + 1) % 2]);
        let gets = || counts[(i + 1) % 2].counts().get.load(Ordering::SeqCst);
        let key = m.key.expose_secret();
        tokio::time::sleep(jitter.up_to(Duration::from_millis(300))).await;
        // Entries live 30 s at most: refill one that aged out, then check
        // that the reader serves the key from its cache, as it must for the
        // measure to mean anything.
        reader.verify(key).await.expect("served before the revoke");
        let before = gets();
        reader.verify(key).await.expect("served before the revoke");
        hits += usize::from(gets() == before);
        writer.revoke(&team(i), &m.info.id).await.unwrap();
        let committed = Instant::now();
        while reader.verify(key).await.is_ok() {
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "{label}: still served 10 s after the revoke"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(committed.elapsed());
    }
    report(label, &mut latencies, hits);
}

fn report(label: &str, latencies: &mut [Duration], hits: usize) {
    latencies.sort();
    let n = latencies.len();
    let at = |p: usize| latencies[((n * p).div_ceil(100)).clamp(1, n) - 1];
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(n).unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<28} {n:>4} revokes ({hits} served from cache before)   \
         p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms   mean {:>6.1} ms",
        ms(at(50)),
        ms(at(99)),
        ms(latencies[n - 1]),
        ms(mean),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    println!(
        "revoke on one cached instance -> first refusal on the other (feed interval {:?})",
        teamkey_sqlx::DEFAULT_INTERVAL
    );

    if let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") {
        let (schema, options) = PgSchema::new(&url).await;
        let (a, b) = (pg_store(options.clone(), 4).await, pg_store(options, 4).await);
        measure("PostgreSQL (LISTEN/NOTIFY)", a, b).await;
        schema.drop().await;
    }

    if let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") {
        let (database, options) = MyDatabase::new(&url).await;
        let (a, b) = (my_store(options.clone(), 4).await, my_store(options, 4).await);
        measure("MariaDB/MySQL (polling)", a, b).await;
        database.drop().await;
    }

    let path = std::env::temp_dir().join(format!("{}.db", unique("propagation")));
    let sqlite = || async {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        let store = SqlxStore::new(pool);
        store.migrate().await.unwrap();
        store
    };
    let (a, b) = (sqlite().await, sqlite().await);
    measure("SQLite file (polling)", a, b).await;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
