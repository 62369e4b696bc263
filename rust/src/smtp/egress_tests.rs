//! Batches sent from their routes' sources, HELO names and timeouts to the loopback peer, with the pool kept per source.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::deliver::{deliver, Destination};
use super::test_peer::{self, Behaviour, Peer};
use crate::render::{CompiledCampaign, Now};
use crate::wire::{CampaignSpec, MxHost, Outcome, OutcomeKind, Recipient, Route, SessionTimeouts};

fn campaign() -> Arc<CompiledCampaign> {
    let spec = CampaignSpec {
        id: "c".into(),
        sender: "bounces@sender.test".into(),
        from_: "news@sender.test".into(),
        subject: "hello".into(),
        html: None,
        text: Some("body".into()),
        reply_to: None,
        headers: Vec::new(),
        tracking: None,
        unsubscribe: None,
        dkim: Vec::new(),
        verp: None,
        pool: None,
    };
    Arc::new(CompiledCampaign::compile(&spec).unwrap())
}

fn recipients(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| Recipient {
            address: format!("r{i}@dest.test"),
            vars: rmpv::Value::Map(Vec::new()),
            id: None,
            envelope_id: None,
        })
        .collect()
}

fn route(peer: &Peer) -> Route {
    Route {
        hosts: vec![MxHost {
            name: "peer.test".into(),
            addresses: vec![peer.address.ip().to_string()],
            port: peer.address.port(),
        }],
        max_connections: 0,
        max_messages_per_connection: 0,
        source_address: None,
        helo_name: None,
        tls: None,
        timeouts: None,
        connection_rates: Vec::new(),
        idle_timeout: None,
    }
}

fn from(peer: &Peer, source: &str, helo: &str) -> Route {
    Route {
        source_address: Some(source.into()),
        helo_name: Some(helo.into()),
        ..route(peer)
    }
}

async fn send(client: &Arc<Client>, route: &Route, n: usize) -> Vec<Outcome> {
    let destination = Destination::from_wire(route, client).unwrap();
    let delivery = deliver(
        client.clone(),
        campaign(),
        recipients(n),
        destination,
        Now::at(1_700_000_000),
        None,
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(30), delivery)
        .await
        .expect("the delivery hung")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn batches_from_two_sources_use_two_pools_each_with_its_helo_name() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let first = send(&client, &from(&peer, "127.0.0.21", "mta21.example.com"), 3).await;
    let second = send(&client, &from(&peer, "127.0.0.22", "mta22.example.com"), 3).await;
    let opened = peer.connections();
    // From .21 again: the idle sessions of the first batch serve it.
    let third = send(&client, &from(&peer, "127.0.0.21", "mta21.example.com"), 2).await;
    for (outcomes, source) in [
        (&first, "127.0.0.21"),
        (&second, "127.0.0.22"),
        (&third, "127.0.0.21"),
    ] {
        for o in outcomes {
            assert_eq!(o.status, "delivered", "{o:?}");
            assert_eq!(o.source.as_deref(), Some(source));
        }
    }
    // The second batch opened connections of its own, none reused from the first.
    let sources: Vec<(IpAddr, &str)> = opened
        .iter()
        .map(|seen| (seen.client, seen.helo.as_str()))
        .collect();
    let from_21 = (ip("127.0.0.21"), "mta21.example.com");
    let from_22 = (ip("127.0.0.22"), "mta22.example.com");
    assert!(
        sources.contains(&from_21) && sources.contains(&from_22),
        "{sources:?}"
    );
    assert!(
        sources.iter().all(|s| *s == from_21 || *s == from_22),
        "{sources:?}"
    );
    assert_eq!(peer.connections(), opened);
    // Another source with the same name: sessions of .21 are not its own either.
    let fourth = send(&client, &from(&peer, "127.0.0.23", "mta21.example.com"), 1).await;
    assert_eq!(fourth[0].source.as_deref(), Some("127.0.0.23"));
    let last = peer.connections().pop().unwrap();
    assert_eq!(last.client, ip("127.0.0.23"));
}

#[tokio::test]
async fn the_pool_counts_the_connections_it_keeps_until_it_closes() {
    use super::pool::ConnectionCounts;

    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    assert_eq!(client.pool.connections(), ConnectionCounts::default());
    let outcomes = send(&client, &route(&peer), 2).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    // The batch is over: its connections wait idle for the next one, none busy.
    let kept = client.pool.connections();
    assert_eq!(kept.busy, 0);
    assert_eq!(kept.idle, peer.connections().len());
    assert!(kept.idle >= 1);
    client.pool.close().await;
    assert_eq!(client.pool.connections(), ConnectionCounts::default());
}

#[tokio::test]
async fn a_route_without_egress_settings_uses_the_transports() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let outcomes = send(&client, &route(&peer), 2).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    assert_eq!(outcomes[0].source.as_deref(), Some("127.0.0.1"));
    assert_eq!(peer.connections()[0].helo, "client.test");
}

#[tokio::test]
async fn a_routes_short_greeting_timeout_ends_the_wait_for_a_silent_peer() {
    let peer = test_peer::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let mut options = test_peer::options(None);
    options.timeouts.greeting = Duration::from_secs(300);
    let client = Arc::new(Client::new(options).unwrap());
    let short = SessionTimeouts {
        connect_timeout: 5.0,
        greeting_timeout: 0.2,
        ehlo_timeout: 5.0,
        starttls_timeout: 5.0,
        mail_timeout: 5.0,
        rcpt_timeout: 5.0,
        data_timeout: 5.0,
        data_block_timeout: 5.0,
        dot_timeout: 5.0,
    };
    let route = Route {
        source_address: Some("127.0.0.23".into()),
        timeouts: Some(short),
        ..route(&peer)
    };
    // The transport's 300 s would outlast send()'s 30 s guard.
    let outcomes = send(&client, &route, 2).await;
    for o in &outcomes {
        assert_eq!(
            (o.status.as_str(), o.kind),
            ("transient", OutcomeKind::Timeout)
        );
        assert_eq!(o.stage, "banner");
        assert!(o.text.contains("0.2 s"), "{}", o.text);
        // A connection was made: the outcome says from where.
        assert_eq!(o.source.as_deref(), Some("127.0.0.23"));
    }
}

#[tokio::test]
async fn a_source_the_host_lacks_fails_the_batch_locally_and_sends_nothing() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let outcomes = send(&client, &from(&peer, "192.0.2.1", "mta.example.com"), 3).await;
    for o in &outcomes {
        assert_eq!(
            (o.status.as_str(), o.kind),
            ("transient", OutcomeKind::Local)
        );
        assert_eq!(o.stage, "connect");
        assert!(
            o.text.starts_with("source address 192.0.2.1: cannot bind"),
            "{}",
            o.text
        );
        assert_eq!(o.source, None);
    }
    assert!(peer.connections().is_empty());
    // The transport goes on from a source it has.
    let outcomes = send(&client, &from(&peer, "127.0.0.24", "mta24.example.com"), 1).await;
    assert_eq!(outcomes[0].status, "delivered");
}

#[tokio::test]
async fn a_source_of_the_other_ip_version_is_a_local_outcome() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let outcomes = send(&client, &from(&peer, "::1", "mta.example.com"), 1).await;
    assert_eq!(outcomes[0].kind, OutcomeKind::Local);
    assert!(
        outcomes[0].text.contains("not the same IP version"),
        "{}",
        outcomes[0].text
    );
    assert!(peer.connections().is_empty());
}

#[tokio::test]
async fn bad_egress_settings_fail_only_their_batch() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let bad = Route {
        helo_name: Some("mta 21\r\nRSET".into()),
        ..route(&peer)
    };
    let outcomes = send(&client, &bad, 2).await;
    for o in &outcomes {
        assert_eq!(
            (o.status.as_str(), o.kind),
            ("transient", OutcomeKind::Local)
        );
        assert!(o.text.contains("route helo_name"), "{}", o.text);
    }
    assert!(peer.connections().is_empty());
    let outcomes = send(&client, &route(&peer), 1).await;
    assert_eq!(outcomes[0].status, "delivered");
}

#[tokio::test]
async fn max_connections_counts_per_source_and_address_across_batches() {
    let peer = test_peer::start(Behaviour::default()).await;
    let client = Arc::new(Client::new(test_peer::options(None)).unwrap());
    let one = |source: &str| Route {
        max_connections: 1,
        ..from(&peer, source, "mta.example.com")
    };
    let (a, b) = (one("127.0.0.21"), one("127.0.0.21"));
    // Two batches at once from one source, one connection allowed: the second waits
    // and takes over the first's connection. The transport alone would allow two.
    let (first, second) = tokio::join!(send(&client, &a, 20), send(&client, &b, 20));
    assert!(first.iter().chain(&second).all(|o| o.status == "delivered"));
    assert_eq!(peer.connections().len(), 1);
    // Another source has places of its own.
    let c = one("127.0.0.22");
    let (first, second) = tokio::join!(send(&client, &a, 20), send(&client, &c, 20));
    assert!(first.iter().chain(&second).all(|o| o.status == "delivered"));
    let clients: Vec<IpAddr> = peer.connections().iter().map(|s| s.client).collect();
    assert_eq!(clients, vec![ip("127.0.0.21"), ip("127.0.0.22")]);
}
