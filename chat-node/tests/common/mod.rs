//! A real embedded node on an ephemeral port, with a fresh data directory.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use chat_node::chat::Chat;
use chat_node::config::Config;
use chat_node::node;
#[allow(unused_imports)]
pub use parley_e2e::client::{Api, Next, Ws};
use tokio::sync::oneshot;

pub struct TestNode {
    pub base: String,
    pub chat: Arc<Chat>,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "parley-test-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

impl TestNode {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = temp_dir("node");
        let mut config = Config::for_tests(dir.clone());
        adjust(&mut config);
        Self::start_in(config).await
    }

    pub async fn start_in(config: Config) -> Self {
        let dir = config.data_dir.clone();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chat = node::embedded(config, addr).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let c = chat.clone();
        let handle = tokio::spawn(async move {
            let node = node::Node {
                chat: c,
                tasks: Vec::new(),
                internal: None,
            };
            node::serve(listener, node, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            chat,
            dir,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Graceful shutdown; waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }

    pub async fn user(&self, name: &str) -> Api {
        Api::register(&self.base, name).await
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
