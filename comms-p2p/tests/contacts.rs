//! The contact store: a peer remembers where the peers it met listen (those it dialled, and those
//! that dialled it, at the address identify reported), and a restart with no configured peers
//! finds them again from the file.

use std::time::Duration;

use comms::conformance::eventually;
use comms_p2p::{load_or_create_key, P2pConfig, P2pPeer};

const BOUND: Duration = Duration::from_secs(20);

async fn listening(peer: &P2pPeer) -> Vec<String> {
    eventually(BOUND, "the peer listens", || async {
        !peer.listening().await.expect("running").is_empty()
    })
    .await;
    peer.listening().await.expect("running")
}

async fn connected(a: &P2pPeer, b: &P2pPeer) {
    eventually(BOUND, "connected", || async {
        a.peers().await.expect("running").contains(&b.local_peer())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_finds_the_peers_it_met_from_its_contact_store() {
    let dir = std::env::temp_dir().join(format!("p2p-contacts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let with_store = |name: &str| P2pConfig {
        contact_store: Some(dir.join(format!("{name}.json"))),
        ..P2pConfig::default()
    };
    let key_a = load_or_create_key(&dir.join("a.key")).expect("a new key");
    let key_b = load_or_create_key(&dir.join("b.key")).expect("a new key");
    let again = load_or_create_key(&dir.join("a.key")).expect("the same key");
    assert_eq!(again.public(), key_a.public(), "a key file is read back");
    let shared = dir.join("shared.key");
    std::fs::copy(dir.join("a.key"), &shared).expect("a copy");
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&shared, readable).expect("chmod 644");
    let refused = load_or_create_key(&shared).expect_err("a key others can read is refused");
    assert!(
        refused.to_string().contains("readable by others"),
        "{refused}"
    );

    // B listens; A dials it (A remembers B's address); B remembers where A listens (identify).
    let b = P2pPeer::start(key_b.clone(), with_store("b"))
        .await
        .expect("starts");
    let b_address = listening(&b).await;
    let config = P2pConfig {
        peers: b_address.clone(),
        ..with_store("a")
    };
    let a = P2pPeer::start(key_a.clone(), config).await.expect("starts");
    let a_address = listening(&a).await;
    connected(&a, &b).await;
    let remembered = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.json")));
    eventually(BOUND, "each remembers the other", || async {
        let (at_a, at_b) = (remembered("a"), remembered("b"));
        at_a.is_ok_and(|file| file.contains(&b_address[0]))
            && at_b.is_ok_and(|file| file.contains(&a_address[0]))
    })
    .await;

    // A restarts with no configured peer: it dials B from its store.
    a.shutdown().await.expect("stops");
    drop(a);
    eventually(BOUND, "B sees A leave", || async {
        !b.peers()
            .await
            .expect("running")
            .iter()
            .any(|p| p.as_str() == key_a.public().to_peer_id().to_string())
    })
    .await;
    let a = P2pPeer::start(key_a, with_store("a"))
        .await
        .expect("restarts");
    connected(&a, &b).await;

    // And B, restarted with no configured peer, dials A from its store.
    b.shutdown().await.expect("stops");
    drop(b);
    let b = P2pPeer::start(key_b, with_store("b"))
        .await
        .expect("restarts");
    connected(&b, &a).await;
    let _ = std::fs::remove_dir_all(&dir);
}
