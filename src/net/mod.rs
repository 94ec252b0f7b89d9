//! The HTTP plumbing every server and client of the crate stands on, below
//! everything else: it knows no route, no config file and no state.
//!
//! * [`serve::serve`]: the accept loop with its timeouts, TLS and HTTP/2;
//! * [`client`]: the one outbound HTTP(S) client (proxies, TLS, bounded bodies);
//! * [`tls`] (with [`x509`]): rustls setups from a [`tls_policy`];
//! * [`auth`]: bearer-token and Basic checks; [`secret`]: values never logged;
//! * [`body`] and [`error`]: bounded request bodies and the one JSON error.

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod secret;
pub mod serve;
pub mod tls;
pub mod tls_policy;
pub mod x509;
