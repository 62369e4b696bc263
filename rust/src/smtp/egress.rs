//! How one batch leaves this host: its source address, HELO name, TLS policy and timeouts, each its route's own or the transport's.
//!
//! The engine sends each site's batches from the sources of a pool (an ESP's IP
//! addresses), each source with the EHLO name its PTR record gives and the limits its
//! shaping entry sets; a [`Route`] carries those settings, and [`Egress::of_route`]
//! checks them once per batch. A route that sets none shares the transport's
//! [`Egress`] (one reference count, nothing allocated), so the hot path pays nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::options::{
    helo_name, seconds, source_address, tls_policy, ClientOptions, Timeouts, TlsPolicy,
};
use crate::wire::Route;

/// The settings a session is opened and run with; with the destination address they
/// make its pool key, so sessions of different sources or names are never mixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The local address connections are bound to, or None: the system's choice.
    pub source: Option<IpAddr>,
    /// The name sent with EHLO/HELO. Shared with the pool keys.
    pub helo: Arc<str>,
    pub tls: TlsPolicy,
    pub timeouts: Timeouts,
    /// How long a connection of these settings may wait idle in the pool.
    pub idle_timeout: Duration,
}

impl Egress {
    /// The transport's own settings, for routes that set none.
    pub fn of_options(options: &ClientOptions) -> Self {
        Self {
            source: options.source_address,
            helo: Arc::from(options.helo_name.as_str()),
            tls: options.tls,
            timeouts: options.timeouts,
            idle_timeout: options.idle_timeout,
        }
    }

    /// The settings of a batch on `route`: what the route sets, checked, and the
    /// transport's (`default`) for the rest. The error names the route's field and
    /// what is wrong with it.
    pub fn of_route(route: &Route, default: &Arc<Egress>) -> Result<Arc<Egress>, String> {
        if route.source_address.is_none()
            && route.helo_name.is_none()
            && route.tls.is_none()
            && route.timeouts.is_none()
            && route.idle_timeout.is_none()
        {
            return Ok(default.clone());
        }
        let source = match &route.source_address {
            Some(text) => Some(source_address("route source_address", text)?),
            None => default.source,
        };
        let helo = match &route.helo_name {
            Some(text) => Arc::from(helo_name("route helo_name", text)?),
            None => default.helo.clone(),
        };
        let tls = match &route.tls {
            Some(name) => tls_policy("route tls", name)?,
            None => default.tls,
        };
        let timeouts = match &route.timeouts {
            Some(timeouts) => {
                Timeouts::from_wire(timeouts).map_err(|e| format!("route timeouts: {e}"))?
            }
            None => default.timeouts,
        };
        let idle_timeout = match route.idle_timeout {
            Some(value) => seconds("route idle_timeout", value)?,
            None => default.idle_timeout,
        };
        Ok(Arc::new(Self {
            source,
            helo,
            tls,
            timeouts,
            idle_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smtp::test_peer;
    use crate::wire::SessionTimeouts;

    fn route() -> Route {
        Route {
            hosts: Vec::new(),
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

    fn timeouts(greeting: f64) -> SessionTimeouts {
        SessionTimeouts {
            connect_timeout: 1.0,
            greeting_timeout: greeting,
            ehlo_timeout: 3.0,
            starttls_timeout: 4.0,
            mail_timeout: 5.0,
            rcpt_timeout: 6.0,
            data_timeout: 7.0,
            data_block_timeout: 8.0,
            dot_timeout: 9.0,
        }
    }

    #[test]
    fn a_route_that_sets_nothing_shares_the_transports() {
        let default = Arc::new(Egress::of_options(&test_peer::options(None)));
        let egress = Egress::of_route(&route(), &default).unwrap();
        assert!(Arc::ptr_eq(&egress, &default));
    }

    #[test]
    fn a_route_sets_each_setting_and_keeps_the_rest() {
        let default = Arc::new(Egress::of_options(&test_peer::options(None)));
        let egress = Egress::of_route(
            &Route {
                source_address: Some("127.0.0.21".into()),
                helo_name: Some("mta21.example.com".into()),
                ..route()
            },
            &default,
        )
        .unwrap();
        assert_eq!(egress.source, Some("127.0.0.21".parse().unwrap()));
        assert_eq!(&*egress.helo, "mta21.example.com");
        assert_eq!(
            (egress.tls, egress.timeouts),
            (default.tls, default.timeouts)
        );

        let egress = Egress::of_route(
            &Route {
                tls: Some("required".into()),
                timeouts: Some(timeouts(2.0)),
                ..route()
            },
            &default,
        )
        .unwrap();
        assert_eq!((egress.source, &egress.helo), (None, &default.helo));
        assert_eq!(egress.tls, TlsPolicy::Required);
        assert_eq!(egress.timeouts.greeting, Duration::from_secs(2));
        assert_eq!(egress.timeouts.dot, Duration::from_secs(9));
    }

    #[test]
    fn each_bad_setting_is_named() {
        let default = Arc::new(Egress::of_options(&test_peer::options(None)));
        let cases = [
            (
                Route {
                    source_address: Some("eth0".into()),
                    ..route()
                },
                "route source_address \"eth0\"",
            ),
            (
                Route {
                    helo_name: Some("mta 21.example.com".into()),
                    ..route()
                },
                "route helo_name",
            ),
            (
                Route {
                    helo_name: Some("mta21.example.com\r\nMAIL FROM:<x@y>".into()),
                    ..route()
                },
                "route helo_name",
            ),
            (
                Route {
                    helo_name: Some(format!("{}.example", "a".repeat(250))),
                    ..route()
                },
                "route helo_name",
            ),
            (
                Route {
                    tls: Some("sometimes".into()),
                    ..route()
                },
                "route tls \"sometimes\"",
            ),
            (
                Route {
                    timeouts: Some(timeouts(0.0)),
                    ..route()
                },
                "route timeouts: greeting_timeout 0",
            ),
            (
                Route {
                    timeouts: Some(timeouts(-1.0)),
                    ..route()
                },
                "route timeouts: greeting_timeout -1",
            ),
        ];
        for (route, named) in cases {
            let err = Egress::of_route(&route, &default).unwrap_err();
            assert!(err.starts_with(named), "{err:?} should name {named}");
        }
    }
}
